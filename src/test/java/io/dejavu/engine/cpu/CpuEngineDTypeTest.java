package io.dejavu.engine.cpu;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.dejavu.engine.Sequence;
import io.dejavu.engine.Step;
import io.dejavu.model.Checkpoint;
import io.dejavu.model.OptModel;
import io.dejavu.model.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.UnaryOperator;

import static io.dejavu.engine.cpu.GoldenReference.relativeL2;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The BF16 and F32 weight paths (the shared models are all F16): opt-tiny-preln rewritten in those types must give
 * the logits of the same values in F16 (F32 holds every half exactly) or in F32 (for values rounded to bf16).
 */
class CpuEngineDTypeTest {
    private static final Path TINY = GoldenReference.shared().resolve("golden/opt-tiny-preln");
    private static final int[] PROMPT = {2, 464, 1893, 531, 326, 262, 3277};

    @Test
    void float32CheckpointGivesTheFloat16Logits(@TempDir Path tmp) throws IOException {
        Path f32 = rewrite(tmp.resolve("f32"), "F32", UnaryOperator.identity());
        assertSameLogits(logits(TINY), logits(f32));
    }

    @Test
    void bfloat16CheckpointGivesTheLogitsOfItsValuesInFloat32(@TempDir Path tmp) throws IOException {
        Path bf16 = rewrite(tmp.resolve("bf16"), "BF16", CpuEngineDTypeTest::roundToBFloat16);
        Path f32 = rewrite(tmp.resolve("f32"), "F32", CpuEngineDTypeTest::roundToBFloat16);
        assertSameLogits(logits(f32), logits(bf16));
    }

    private static float roundToBFloat16(float x) {
        int bits = Float.floatToRawIntBits(x);
        bits += 0x7fff + ((bits >>> 16) & 1);
        return Float.intBitsToFloat(bits & 0xffff0000);
    }

    private static void assertSameLogits(List<float[]> expected, List<float[]> actual) {
        for (int i = 0; i < expected.size(); i++) {
            double error = relativeL2(actual.get(i), expected.get(i));
            assertTrue(error < 1e-6, "logits " + i + ": relative L2 difference " + error);
        }
    }

    /** Last-token logits of a prefill and of two decode steps after it. */
    private static List<float[]> logits(Path dir) {
        List<float[]> out = new ArrayList<>();
        try (OptModel model = OptModel.load(dir); CpuEngine engine = new CpuEngine(model, 2); Sequence s = engine.newSequence()) {
            out.add(engine.forward(List.of(Step.last(s, PROMPT))).getFirst()[0]);
            for (int token : new int[]{11, 290}) out.add(engine.forward(List.of(Step.last(s, token))).getFirst()[0]);
        }
        return out;
    }

    /** opt-tiny-preln with every tensor converted to {@code dtype} (after {@code transform}) in one safetensors file. */
    private static Path rewrite(Path dir, String dtype, UnaryOperator<Float> transform) throws IOException {
        Files.createDirectories(dir);
        Files.copy(TINY.resolve("config.json"), dir.resolve("config.json"));
        int bytes = dtype.equals("F32") ? 4 : 2;
        Map<String, Object> header = new LinkedHashMap<>();
        List<float[]> data = new ArrayList<>();
        long offset = 0;
        try (Checkpoint checkpoint = Checkpoint.open(TINY)) {
            for (String name : checkpoint.names()) {
                Tensor t = checkpoint.find(name);
                float[] values = t.toFloatArray();
                for (int i = 0; i < values.length; i++) values[i] = transform.apply(values[i]);
                long size = (long) values.length * bytes;
                header.put(name, Map.of("dtype", dtype, "shape", t.shape(), "data_offsets", List.of(offset, offset + size)));
                data.add(values);
                offset += size;
            }
        }
        byte[] json = new ObjectMapper().writeValueAsBytes(header);
        int padded = (json.length + 7) / 8 * 8;
        ByteBuffer buffer = ByteBuffer.allocate(8 + padded + (int) offset).order(ByteOrder.LITTLE_ENDIAN);
        buffer.putLong(padded).put(json);
        for (int i = json.length; i < padded; i++) buffer.put((byte) ' ');
        for (float[] values : data) {
            for (float v : values) {
                if (bytes == 4) buffer.putFloat(v);
                else buffer.putShort((short) (Float.floatToRawIntBits(v) >>> 16));
            }
        }
        try (FileChannel out = FileChannel.open(dir.resolve("model.safetensors"), StandardOpenOption.CREATE_NEW,
                StandardOpenOption.WRITE)) {
            out.write(buffer.flip());
        }
        return dir;
    }
}
