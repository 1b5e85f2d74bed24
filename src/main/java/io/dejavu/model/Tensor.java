package io.dejavu.model;

import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.Arrays;

/**
 * A named tensor whose bytes stay where the checkpoint file is mapped: nothing is copied onto the Java heap.
 *
 * @param source the file it was read from, for error messages
 */
public record Tensor(String name, DType dtype, long[] shape, MemorySegment data, Path source) {

    public long elementCount() {
        long n = 1;
        for (long d : shape) n *= d;
        return n;
    }

    public float get(long index) {
        return dtype.get(data, index);
    }

    /** The whole tensor as floats, for small tensors (biases, norms) and tests. */
    public float[] toFloatArray() {
        long n = elementCount();
        if (n > Integer.MAX_VALUE) throw new IllegalStateException(name + " is too large for a float[]");
        float[] out = new float[(int) n];
        for (int i = 0; i < out.length; i++) out[i] = get(i);
        return out;
    }

    public String shapeString() {
        return Arrays.toString(shape);
    }
}
