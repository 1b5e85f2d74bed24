package io.dejavu.engine.cuda;

import io.dejavu.engine.Sequence;

import java.util.Arrays;

/** A sequence's state on the GPU: its length and its table of KV cache blocks. */
final class CudaSequence implements Sequence {
    private final CudaEngine engine;
    private int length;
    private int[] blocks = new int[4];
    private int blockCount;
    private boolean closed;

    CudaSequence(CudaEngine engine) {
        this.engine = engine;
    }

    @Override
    public int length() {
        return length;
    }

    CudaEngine engine() {
        return engine;
    }

    boolean closed() {
        return closed;
    }

    /** Makes room for {@code tokens} more tokens, taking blocks from the pool. */
    void reserve(KvCachePool pool, int tokens) {
        int needed = (length + tokens + KvCachePool.BLOCK_TOKENS - 1) / KvCachePool.BLOCK_TOKENS;
        while (blockCount < needed) {
            if (blockCount == blocks.length) blocks = Arrays.copyOf(blocks, 2 * blocks.length);
            int block = pool.take(length + tokens);  // before counting it: take may throw
            blocks[blockCount++] = block;
        }
    }

    int slot(int position) {
        return blocks[position / KvCachePool.BLOCK_TOKENS] * KvCachePool.BLOCK_TOKENS
                + position % KvCachePool.BLOCK_TOKENS;
    }

    int blockCount() {
        return blockCount;
    }

    int block(int i) {
        return blocks[i];
    }

    void advance(int tokens) {
        length += tokens;
    }

    @Override
    public void close() {
        if (closed) return;
        closed = true;
        engine.release(this);
    }

    void freeBlocks(KvCachePool pool) {
        for (int i = 0; i < blockCount; i++) pool.give(blocks[i]);
        blockCount = 0;
    }
}
