package io.dejavu.engine.cuda;

import io.dejavu.model.OptConfig;

import java.util.ArrayDeque;
import java.util.Deque;

/**
 * The paged KV cache: per layer one K and one V pool of fixed-size blocks [block][head][BLOCK_TOKENS][headDim]
 * fp16; a sequence holds a table of block numbers, so sequences grow without reserving their maximum length and
 * without fragmentation. One allocation for all layers.
 */
final class KvCachePool {
    static final int BLOCK_TOKENS = 16;

    private final DeviceMemory memory;
    private final int blocks;
    private final long poolBytes;  // one layer's K (or V) pool
    private final Deque<Integer> free = new ArrayDeque<>();

    KvCachePool(CudaContext cuda, OptConfig c, long bytes) {
        long perBlock = blockBytes(c);
        long count = bytes / perBlock;
        if (count < 1) {
            throw new GpuOutOfMemoryException(String.format("KV cache of %.1f MiB holds no block of %d tokens "
                    + "(%.2f MiB each for this model): raise the KV cache size", bytes / 1048576.0, BLOCK_TOKENS,
                    perBlock / 1048576.0));
        }
        blocks = (int) Math.min(count, Integer.MAX_VALUE / BLOCK_TOKENS);
        poolBytes = (long) blocks * BLOCK_TOKENS * c.hiddenSize() * 2;
        memory = cuda.alloc(2L * c.numHiddenLayers() * poolBytes,
                "KV cache (" + blocks + " blocks of " + BLOCK_TOKENS + " tokens)");
        for (int i = 0; i < blocks; i++) free.add(i);
    }

    /** Bytes of one block of BLOCK_TOKENS tokens over all layers, K and V. */
    static long blockBytes(OptConfig c) {
        return 2L * c.numHiddenLayers() * BLOCK_TOKENS * c.hiddenSize() * 2;
    }

    long keys(int layer) {
        return memory.at(2L * layer * poolBytes);
    }

    long values(int layer) {
        return memory.at((2L * layer + 1) * poolBytes);
    }

    int blocks() {
        return blocks;
    }

    int freeBlocks() {
        return free.size();
    }

    int take(int sequenceLength) {
        Integer b = free.poll();
        if (b == null) {
            throw new GpuOutOfMemoryException("KV cache full: all " + blocks + " blocks of " + BLOCK_TOKENS
                    + " tokens are in use (a sequence needed one more at length " + sequenceLength
                    + "); finish or close sequences, or give the cache more memory");
        }
        return b;
    }

    void give(int block) {
        free.push(block);
    }
}
