package io.dejavu.sparsity;

/** A rows x columns matrix of bits: per calibration token, which neurons are active or which heads matter. */
public final class LabelMatrix {
    private final int columns;
    private final int words;
    private final long[] bits;

    public LabelMatrix(int rows, int columns) {
        this.columns = columns;
        this.words = (columns + 63) >>> 6;
        this.bits = new long[Math.multiplyExact(rows, words)];
    }

    public int columns() {
        return columns;
    }

    public void set(int row, int column) {
        bits[row * words + (column >>> 6)] |= 1L << column;
    }

    public boolean get(int row, int column) {
        return (bits[row * words + (column >>> 6)] & (1L << column)) != 0;
    }

    /** Set bits in {@code row}. */
    public int count(int row) {
        int n = 0;
        for (int w = 0; w < words; w++) n += Long.bitCount(bits[row * words + w]);
        return n;
    }
}
