package io.dejavu.engine.cpu;

import io.dejavu.engine.Sequence;

import java.util.ArrayList;
import java.util.List;

/**
 * A sequence's KV cache on the Java heap. It grows in blocks of {@link #BLOCK_POSITIONS} positions, each block holding
 * every layer's keys (or values) laid out [head][position in block][head dim], so that one head's keys are contiguous
 * for the attention loop and nothing is copied as the cache grows. Blocks come from the engine's {@link KvBlockPool}
 * and go back to it when the sequence is closed.
 */
final class CpuSequence implements Sequence {
    static final int BLOCK_POSITIONS = 64;

    private final CpuEngine engine;
    private final KvBlockPool blocks;
    private final int maxPositions;
    private final List<float[][]> keyBlocks = new ArrayList<>();
    private final List<float[][]> valueBlocks = new ArrayList<>();
    private int length;
    private boolean closed;

    CpuSequence(CpuEngine engine, KvBlockPool blocks, int maxPositions) {
        this.engine = engine;
        this.blocks = blocks;
        this.maxPositions = maxPositions;
    }

    CpuEngine engine() {
        return engine;
    }

    boolean isClosed() {
        return closed;
    }

    @Override
    public int length() {
        return length;
    }

    /** Makes room for {@code added} more tokens; fails with a clear message past max_position_embeddings. */
    void reserve(int added) {
        if (closed) throw new IllegalStateException("the sequence was closed");
        int needed = length + added;
        if (needed > maxPositions) {
            throw new IllegalArgumentException("sequence of " + length + " tokens cannot take " + added
                    + " more: the model's max_position_embeddings is " + maxPositions);
        }
        while (keyBlocks.size() * BLOCK_POSITIONS < needed) {
            keyBlocks.add(blocks.take());
            valueBlocks.add(blocks.take());
        }
    }

    void advance(int added) {
        length += added;
    }

    /** Keys of {@code layer} for positions {@code block*BLOCK_POSITIONS ..} of this block. */
    float[] keys(int block, int layer) {
        return keyBlocks.get(block)[layer];
    }

    float[] values(int block, int layer) {
        return valueBlocks.get(block)[layer];
    }

    @Override
    public void close() {
        if (closed) return;
        closed = true;
        blocks.giveBack(keyBlocks);
        blocks.giveBack(valueBlocks);
        keyBlocks.clear();
        valueBlocks.clear();
    }
}
