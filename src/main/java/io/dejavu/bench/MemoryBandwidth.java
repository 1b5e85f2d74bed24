package io.dejavu.bench;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;
import java.util.concurrent.BrokenBarrierException;
import java.util.concurrent.CyclicBarrier;

/**
 * Measures the memory read bandwidth a decode step can hope for: several threads each stream their slice of a buffer
 * much larger than the caches with vector loads, as a weight-stationary matvec reads weights.
 */
public final class MemoryBandwidth {
    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    private static final long VECTOR = F.vectorByteSize();
    /**
     * Bytes each iteration of the read loop takes, a constant: with the stride a variable the JIT kept a bounds check
     * per load, and one thread read 15-18 GB/s where a C loop reads 26.
     */
    private static final long STEP = 4 * VECTOR;
    /** Where the warm-up's sums go, so that its reads cannot be optimised away. */
    private static volatile float warmUpSum;

    private MemoryBandwidth() {
    }

    /** Best read bandwidth in bytes per second over {@code repeats} passes of a {@code bytes} buffer. */
    public static double measure(int threads, long bytes, int repeats) {
        try (Arena arena = Arena.ofShared()) {
            long size = bytes / (STEP * threads) * STEP * threads;
            MemorySegment buffer = arena.allocate(size, 64);
            buffer.fill((byte) 1);
            warmUp(buffer);
            double best = 0;
            for (int r = 0; r < repeats; r++) best = Math.max(best, size / pass(buffer, threads));
            return best;
        }
    }

    /**
     * Compiles the read loop before any pass is timed: interpreted, a pass over the buffer runs at a tenth of the
     * bandwidth and left only the last few of the passes to measure it.
     */
    private static void warmUp(MemorySegment buffer) {
        long slice = Math.min(buffer.byteSize(), 1 << 16) / STEP * STEP;
        float sum = 0;
        for (int i = 0; i < 20_000; i++) sum += read(buffer, 0, slice);
        warmUpSum = sum;
    }

    /** Seconds for all threads to read their slices, from a common start to the last one done. */
    private static double pass(MemorySegment buffer, int threads) {
        long slice = buffer.byteSize() / threads;
        CyclicBarrier start = new CyclicBarrier(threads + 1);
        Thread[] readers = new Thread[threads];
        // Each reader's sum is stored so that the reads cannot be optimised away.
        float[] sink = new float[threads];
        for (int i = 0; i < threads; i++) {
            int index = i;
            readers[i] = Thread.ofPlatform().start(() -> {
                await(start);
                sink[index] = read(buffer, index * slice, slice);
            });
        }
        await(start);
        long t0 = System.nanoTime();
        for (Thread t : readers) {
            try {
                t.join();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException("interrupted while measuring memory bandwidth", e);
            }
        }
        return (System.nanoTime() - t0) / 1e9;
    }

    private static float read(MemorySegment buffer, long from, long length) {
        ByteOrder order = ByteOrder.nativeOrder();
        FloatVector a0 = FloatVector.zero(F), a1 = a0, a2 = a0, a3 = a0;
        for (long o = from, end = from + length; o < end; o += STEP) {
            a0 = a0.add(FloatVector.fromMemorySegment(F, buffer, o, order));
            a1 = a1.add(FloatVector.fromMemorySegment(F, buffer, o + VECTOR, order));
            a2 = a2.add(FloatVector.fromMemorySegment(F, buffer, o + 2 * VECTOR, order));
            a3 = a3.add(FloatVector.fromMemorySegment(F, buffer, o + 3 * VECTOR, order));
        }
        return a0.add(a1).add(a2).add(a3).reduceLanes(VectorOperators.ADD);
    }

    private static void await(CyclicBarrier barrier) {
        try {
            barrier.await();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted while measuring memory bandwidth", e);
        } catch (BrokenBarrierException e) {
            throw new IllegalStateException("memory bandwidth readers failed", e);
        }
    }
}
