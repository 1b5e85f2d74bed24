package io.dejavu.engine.cpu;

import io.dejavu.model.DType;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;

/** Decodes runs of checkpoint elements (F16, BF16, F32, little-endian) from a mapped segment into floats. */
final class RowDecoder {
    static final VectorSpecies<Float> FLOATS = FloatVector.SPECIES_PREFERRED;
    private static final VectorSpecies<Integer> INTS = FLOATS.withLanes(int.class).check(int.class);
    /** Half-width shorts, one per float lane. */
    private static final VectorSpecies<Short> SHORTS =
            VectorSpecies.of(short.class, VectorShape.forBitSize(FLOATS.vectorBitSize() / 2));
    private static final ByteOrder LE = ByteOrder.LITTLE_ENDIAN;
    /** 2^(127-15): rebiases a half's exponent once its bits sit in a float's exponent field. */
    private static final float HALF_EXPONENT_REBIAS = 0x1p112f;

    private RowDecoder() {
    }

    /** Elements {@code first .. first+count-1} of {@code data} into {@code dst[dstOffset..]}. */
    static void decode(MemorySegment data, DType dtype, long first, int count, float[] dst, int dstOffset) {
        switch (dtype) {
            case F16 -> decodeF16(data, first, count, dst, dstOffset);
            case BF16 -> decodeBF16(data, first, count, dst, dstOffset);
            case F32 -> decodeF32(data, first, count, dst, dstOffset);
        }
    }

    private static void decodeF16(MemorySegment data, long first, int count, float[] dst, int dstOffset) {
        int lanes = FLOATS.length(), bound = FLOATS.loopBound(count), i = 0;
        for (; i < bound; i += lanes) {
            ShortVector h = ShortVector.fromMemorySegment(SHORTS, data, (first + i) * 2, LE);
            halfToFloat(h).intoArray(dst, dstOffset + i);
        }
        for (; i < count; i++) dst[dstOffset + i] = DType.F16.get(data, first + i);
    }

    /**
     * The Vector API has no half-float lane conversion. Shifting the (sign-extended) half left by 13 puts its exponent
     * and mantissa under a float's, and its sign in bit 31 with copies in bits 30..28 that the mask clears; scaling by
     * 2^112 then rebiases the exponent, and turns subnormal halves (float subnormals here) into the right normal
     * floats. Exact for every finite half; infinities and NaNs do not occur in weights.
     */
    static FloatVector halfToFloat(ShortVector h) {
        return halfTimes2ToMinus112(h).mul(HALF_EXPONENT_REBIAS);
    }

    /** {@link #halfToFloat} without its final scaling: the half's value times 2^-112, exactly. */
    private static FloatVector halfTimes2ToMinus112(ShortVector h) {
        IntVector bits = (IntVector) h.castShape(INTS, 0);
        return bits.lanewise(VectorOperators.LSHL, 13).and(0x8fffe000).reinterpretAsFloats();
    }

    /** One vector of elements {@code first ..} as floats. */
    static FloatVector load(MemorySegment data, DType dtype, long first) {
        return switch (dtype) {
            case F16 -> halfToFloat(ShortVector.fromMemorySegment(SHORTS, data, first * 2, LE));
            case BF16 -> ((IntVector) ShortVector.fromMemorySegment(SHORTS, data, first * 2, LE).castShape(INTS, 0))
                    .lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats();
            case F32 -> FloatVector.fromMemorySegment(FLOATS, data, first * 4, LE);
        };
    }

    /**
     * {@link #load} divided by {@link #foldedScale}: fp16 elements skip the multiply that ends their decoding, so that
     * a matvec can fold it into its input once instead of paying it on every weight vector.
     */
    static FloatVector loadFolded(MemorySegment data, DType dtype, long first) {
        return dtype == DType.F16 ? halfTimes2ToMinus112(ShortVector.fromMemorySegment(SHORTS, data, first * 2, LE))
                : load(data, dtype, first);
    }

    /** The power of two that {@link #loadFolded} leaves out for {@code dtype}. */
    static float foldedScale(DType dtype) {
        return dtype == DType.F16 ? HALF_EXPONENT_REBIAS : 1f;
    }

    private static void decodeBF16(MemorySegment data, long first, int count, float[] dst, int dstOffset) {
        int lanes = FLOATS.length(), bound = FLOATS.loopBound(count), i = 0;
        for (; i < bound; i += lanes) {
            ShortVector h = ShortVector.fromMemorySegment(SHORTS, data, (first + i) * 2, LE);
            IntVector bits = (IntVector) h.castShape(INTS, 0);
            bits.lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats().intoArray(dst, dstOffset + i);
        }
        for (; i < count; i++) dst[dstOffset + i] = DType.BF16.get(data, first + i);
    }

    private static void decodeF32(MemorySegment data, long first, int count, float[] dst, int dstOffset) {
        int lanes = FLOATS.length(), bound = FLOATS.loopBound(count), i = 0;
        for (; i < bound; i += lanes) {
            FloatVector.fromMemorySegment(FLOATS, data, (first + i) * 4, LE).intoArray(dst, dstOffset + i);
        }
        for (; i < count; i++) dst[dstOffset + i] = DType.F32.get(data, first + i);
    }
}
