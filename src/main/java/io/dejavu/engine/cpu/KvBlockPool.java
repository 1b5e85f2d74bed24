package io.dejavu.engine.cpu;

import java.util.ArrayDeque;
import java.util.List;

/**
 * The CPU KV cache's blocks (one layer set of keys or values for {@link CpuSequence#BLOCK_POSITIONS} positions): a
 * closed sequence's blocks come back here and the next sequence takes them, so that a serving engine's cache is
 * not a stream of large arrays that live as long as a request, which the collector copies, promotes and then has to
 * reclaim concurrently (docs/BENCHMARKS.md, the service load test). A reused block holds the keys of an earlier
 * sequence; that is harmless, since attention reads only positions its own sequence has written. Keeps at most
 * {@link #MAX_FREE_BYTES} of free blocks, so that one burst does not pin its peak for good. Thread-safe: a sequence
 * may be closed on another thread than the engine's.
 */
final class KvBlockPool {
    static final long MAX_FREE_BYTES = 1L << 30;

    private final int layers, blockSize, maxFree;
    private final ArrayDeque<float[][]> free = new ArrayDeque<>();

    /** Blocks of {@code layers} arrays of {@code blockSize} floats. */
    KvBlockPool(int layers, int blockSize) {
        this.layers = layers;
        this.blockSize = blockSize;
        this.maxFree = (int) Math.max(1, Math.min(Integer.MAX_VALUE, MAX_FREE_BYTES / (4L * layers * blockSize)));
    }

    synchronized float[][] take() {
        float[][] block = free.pollLast();
        return block != null ? block : new float[layers][blockSize];
    }

    synchronized void giveBack(List<float[][]> blocks) {
        for (float[][] block : blocks) {
            if (free.size() >= maxFree) return;
            free.addLast(block);
        }
    }

    synchronized int freeBlocks() {
        return free.size();
    }
}
