package io.dejavu.engine.cpu;

import io.dejavu.model.DType;
import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static org.junit.jupiter.api.Assertions.assertEquals;

class RowDecoderTest {

    /** The vector fp16 decoding gives Float.float16ToFloat's exact bits for all 65536 halves but Inf/NaN. */
    @Test
    void decodesEveryFiniteHalfExactly() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment halves = arena.allocate(65536 * 2L);
            for (int i = 0; i < 65536; i++) halves.setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i, (short) i);
            float[] decoded = new float[65536];
            RowDecoder.decode(halves, DType.F16, 0, 65536, decoded, 0);
            int checked = 0;
            for (int i = 0; i < 65536; i++) {
                float expected = Float.float16ToFloat((short) i);
                if (!Float.isFinite(expected)) continue;
                assertEquals(Float.floatToRawIntBits(expected), Float.floatToRawIntBits(decoded[i]),
                        "half 0x" + Integer.toHexString(i));
                checked++;
            }
            assertEquals(65536 - 2 * 1024, checked);
        }
    }

    @Test
    void decodesBFloat16AndFloat32WithUnalignedTails() {
        try (Arena arena = Arena.ofConfined()) {
            int n = 37;
            MemorySegment bf16 = arena.allocate(n * 2L), f32 = arena.allocate(n * 4L);
            float[] expected = new float[n];
            for (int i = 0; i < n; i++) {
                expected[i] = Float.intBitsToFloat(Float.floatToRawIntBits((i - 18) * 0.37f) & 0xffff0000);
                bf16.setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i, (short) (Float.floatToRawIntBits(expected[i]) >>> 16));
                f32.setAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, i, expected[i]);
            }
            float[] a = new float[n + 3], b = new float[n + 3];
            RowDecoder.decode(bf16, DType.BF16, 1, n - 1, a, 3);
            RowDecoder.decode(f32, DType.F32, 1, n - 1, b, 3);
            for (int i = 1; i < n; i++) {
                assertEquals(expected[i], a[i + 2], "bf16 element " + i);
                assertEquals(expected[i], b[i + 2], "f32 element " + i);
            }
        }
    }
}
