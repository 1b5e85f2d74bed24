package io.dejavu.model;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.reflect.RecordComponent;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.*;

class TorchCheckpointFileTest {
    private static final Path GOLDEN = Path.of(System.getProperty("dejavu.shared"), "golden");

    @Test
    void binAndDecoderPrefixLayoutsGiveTheSafetensorsWeights() throws Exception {
        try (OptModel safetensors = OptModel.load(GOLDEN.resolve("opt-tiny-preln"));
             OptModel bin = OptModel.load(GOLDEN.resolve("opt-tiny-preln-bin"));
             OptModel decoderPrefix = OptModel.load(GOLDEN.resolve("opt-tiny-preln-decoder-prefix"))) {
            List<Tensor> expected = tensorsOf(safetensors.weights());
            assertEquals(5 + 16 * 2, expected.size());
            for (OptModel other : List.of(bin, decoderPrefix)) {
                List<Tensor> actual = tensorsOf(other.weights());
                assertEquals(expected.size(), actual.size());
                for (int i = 0; i < expected.size(); i++) {
                    Tensor e = expected.get(i), a = actual.get(i);
                    assertEquals(layoutFree(e.name()), layoutFree(a.name()));
                    assertArrayEquals(e.shape(), a.shape(), e.name());
                    assertEquals(DType.F16, a.dtype());
                    assertArrayEquals(e.toFloatArray(), a.toFloatArray(), e.name() + " in " + other.directory());
                }
            }
            // decoder.* ships no lm_head.weight: the head is the token embedding, as in the tied safetensors model.
            assertSame(decoderPrefix.weights().embedTokens(), decoderPrefix.weights().lmHead());
            assertEquals("lm_head.weight", bin.weights().lmHead().name());
        }
    }

    @Test
    void tensorsAreViewsOfTheMappedFileNotHeapCopies() {
        try (Arena arena = Arena.ofConfined()) {
            Map<String, Tensor> tensors = TorchCheckpointFile.read(GOLDEN.resolve("opt-tiny-preln-bin/pytorch_model.bin"), arena);
            Tensor embed = tensors.get("model.decoder.embed_tokens.weight");
            assertTrue(embed.data().isMapped());
            assertFalse(embed.data().heapBase().isPresent());
            assertEquals(50272L * 32 * 2, embed.data().byteSize());
            assertEquals(0, embed.data().address() % 64, "torch aligns storages to 64 bytes");
        }
    }

    @Test
    void storageOffsetShapeAndStrideSelectTheView(@TempDir Path dir) throws IOException {
        Path file = dir.resolve("pytorch_model.bin");
        // storage of 10 halves 0..9; the tensor is a [2, 3] view starting at element 4
        CheckpointFiles.writeTorchZip(file, CheckpointFiles.Pickle.halfTensor("w", 10, 4, new int[]{2, 3}, new int[]{3, 1}),
                Map.of("0", halves(10)), false);
        try (Arena arena = Arena.ofConfined()) {
            Tensor w = TorchCheckpointFile.read(file, arena).get("w");
            assertArrayEquals(new long[]{2, 3}, w.shape());
            assertArrayEquals(new float[]{4, 5, 6, 7, 8, 9}, w.toFloatArray());
        }
    }

    @Test
    void readsZip64ArchivesWithAlignedEntries(@TempDir Path dir) throws IOException {
        Path file = dir.resolve("pytorch_model-00001-of-00002.bin");
        CheckpointFiles.writeTorchZip64(file, CheckpointFiles.Pickle.halfTensor("w", 10, 4, new int[]{2, 3}, new int[]{3, 1}),
                Map.of("0", halves(10)));
        try (Arena arena = Arena.ofConfined()) {
            Tensor w = TorchCheckpointFile.read(file, arena).get("w");
            assertArrayEquals(new float[]{4, 5, 6, 7, 8, 9}, w.toFloatArray());
            assertEquals(0, (w.data().address() - 4 * 2) % 64);
        }
    }

    @Test
    void readsAnOrderedDictStateDictWithMetadataAndParameters(@TempDir Path dir) throws IOException {
        Path file = dir.resolve("pytorch_model.bin");
        ByteBuffer floats = ByteBuffer.allocate(12).order(ByteOrder.LITTLE_ENDIAN).putFloat(1.5f).putFloat(-2f).putFloat(3.25f);
        CheckpointFiles.writeTorchZip(file, CheckpointFiles.Pickle.orderedDictWithMetadata("bias", 3), Map.of("0", floats.array()), false);
        try (Arena arena = Arena.ofConfined()) {
            Map<String, Tensor> tensors = TorchCheckpointFile.read(file, arena);
            assertEquals(List.of("bias"), List.copyOf(tensors.keySet()));
            assertEquals(DType.F32, tensors.get("bias").dtype());
            assertArrayEquals(new float[]{1.5f, -2f, 3.25f}, tensors.get("bias").toFloatArray());
        }
    }

    @Test
    void refusesNonContiguousStrides(@TempDir Path dir) throws IOException {
        Path file = dir.resolve("pytorch_model.bin");
        CheckpointFiles.writeTorchZip(file, CheckpointFiles.Pickle.halfTensor("w", 6, 0, new int[]{2, 3}, new int[]{1, 2}),
                Map.of("0", halves(6)), false);
        String message = assertThrows(ModelLoadException.class, () -> read(file)).getMessage();
        assertTrue(message.startsWith(file.toString()), message);
        assertTrue(message.contains("tensor w") && message.contains("[1, 2]") && message.contains("not contiguous"), message);
    }

    @Test
    void refusesViewsPastTheStorage(@TempDir Path dir) throws IOException {
        Path file = dir.resolve("pytorch_model.bin");
        CheckpointFiles.writeTorchZip(file, CheckpointFiles.Pickle.halfTensor("w", 6, 2, new int[]{2, 3}, new int[]{3, 1}),
                Map.of("0", halves(6)), false);
        String message = assertThrows(ModelLoadException.class, () -> read(file)).getMessage();
        assertTrue(message.contains("runs past its storage of 6 elements"), message);
    }

    @Test
    void refusesCompressedEntries(@TempDir Path dir) throws IOException {
        Path file = dir.resolve("pytorch_model.bin");
        CheckpointFiles.writeTorchZip(file, CheckpointFiles.Pickle.halfTensor("w", 6, 0, new int[]{6}, new int[]{1}),
                Map.of("0", halves(6)), true);
        String message = assertThrows(ModelLoadException.class, () -> read(file)).getMessage();
        assertTrue(message.startsWith(file.toString()) && message.contains("archive/data/0 is compressed"), message);
    }

    @Test
    void refusesForbiddenGlobalsWithoutRunningThem(@TempDir Path dir) throws IOException {
        Path file = dir.resolve("pytorch_model.bin");
        Path marker = dir.resolve("pwned");
        byte[] pickle = new CheckpointFiles.Pickle().raw(0x80, 2).global("os", "system")
                .string("touch " + marker).raw(0x85, 'R', '.').bytes();
        CheckpointFiles.writeTorchZip(file, pickle, Map.of(), false);
        String message = assertThrows(ModelLoadException.class, () -> read(file)).getMessage();
        assertTrue(message.startsWith(file.toString()), message);
        assertTrue(message.contains("refusing to load") && message.contains("os.system"), message);
        assertFalse(marker.toFile().exists());
    }

    @Test
    void refusesUnknownOpcodes(@TempDir Path dir) throws IOException {
        Path file = dir.resolve("pytorch_model.bin");
        byte[] pickle = new CheckpointFiles.Pickle().raw(0x80, 2, ']', '.').bytes(); // EMPTY_LIST
        CheckpointFiles.writeTorchZip(file, pickle, Map.of(), false);
        String message = assertThrows(ModelLoadException.class, () -> read(file)).getMessage();
        assertTrue(message.contains("archive/data.pkl") && message.contains("opcode 0x5d"), message);
    }

    @Test
    void refusesFilesThatAreNotZips(@TempDir Path dir) throws IOException {
        Path file = dir.resolve("pytorch_model.bin");
        java.nio.file.Files.write(file, new byte[100]);
        String message = assertThrows(ModelLoadException.class, () -> read(file)).getMessage();
        assertTrue(message.startsWith(file.toString()) && message.contains("not a zip archive"), message);
    }

    /** The name without the layout's prefix; a tied head is named as the embedding it is. */
    private static String layoutFree(String name) {
        return name.replaceFirst("^model\\.", "").replace("lm_head.weight", "decoder.embed_tokens.weight");
    }

    private static void read(Path file) {
        try (Arena arena = Arena.ofConfined()) {
            TorchCheckpointFile.read(file, arena);
        }
    }

    private static byte[] halves(int n) {
        ByteBuffer b = ByteBuffer.allocate(2 * n).order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < n; i++) b.putShort(Float.floatToFloat16(i));
        return b.array();
    }

    /** Every tensor of the weights, in record order (layers last, each in its record order). */
    private static List<Tensor> tensorsOf(Record weights) throws ReflectiveOperationException {
        List<Tensor> out = new ArrayList<>();
        for (RecordComponent c : weights.getClass().getRecordComponents()) {
            Object value = c.getAccessor().invoke(weights);
            if (value instanceof Tensor t) out.add(t);
            else if (value instanceof List<?> layers) for (Object layer : layers) out.addAll(tensorsOf((Record) layer));
        }
        return out;
    }
}
