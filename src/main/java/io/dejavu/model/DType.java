package io.dejavu.model;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/** Element types of checkpoint tensors that the engines read. */
public enum DType {
    F16(2), BF16(2), F32(4);

    private static final ValueLayout.OfShort SHORT = ValueLayout.JAVA_SHORT_UNALIGNED;
    private static final ValueLayout.OfFloat FLOAT = ValueLayout.JAVA_FLOAT_UNALIGNED;

    public final int bytes;

    DType(int bytes) {
        this.bytes = bytes;
    }

    /** Element {@code index} of {@code data} (little-endian, as both safetensors and torch store it) as a float. */
    public float get(MemorySegment data, long index) {
        return switch (this) {
            case F16 -> Float.float16ToFloat(data.getAtIndex(SHORT, index));
            case BF16 -> Float.intBitsToFloat(data.getAtIndex(SHORT, index) << 16);
            case F32 -> data.getAtIndex(FLOAT, index);
        };
    }

    /** The safetensors name ("F16", "BF16", "F32"); null for types this project does not read. */
    public static DType fromSafetensors(String name) {
        return switch (name) {
            case "F16" -> F16;
            case "BF16" -> BF16;
            case "F32" -> F32;
            default -> null;
        };
    }
}
