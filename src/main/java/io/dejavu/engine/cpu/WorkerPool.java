package io.dejavu.engine.cpu;

import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.locks.LockSupport;

/**
 * A small persistent pool that splits an index range across its threads, the caller included. Decode steps are a few
 * milliseconds and run dozens of parallel sections each, so threads are kept alive and woken rather than created.
 * The range is cut into a few chunks per thread that threads claim as they come: on a busy machine a worker that is
 * not scheduled in time leaves its share to the others instead of stalling the section.
 */
final class WorkerPool implements AutoCloseable {
    /** The body of a parallel section: indices {@code from .. to-1}, run by thread number {@code worker}. */
    @FunctionalInterface
    interface RangeTask {
        void run(int worker, int from, int to);
    }

    private static final int CHUNKS_PER_THREAD = 4;
    /** Spin-waits before parking: the next section usually follows within microseconds. */
    private static final int SPINS = 5_000;

    /** One parallel section's work and progress. */
    private static final class Section {
        final RangeTask task;
        final int n;
        final int align;
        final int units;
        final int chunks;
        final Thread caller;
        final AtomicInteger next = new AtomicInteger();
        final AtomicInteger done = new AtomicInteger();
        volatile Throwable failure;

        Section(RangeTask task, int n, int align, int chunks, Thread caller) {
            this.task = task;
            this.n = n;
            this.align = align;
            this.units = (n + align - 1) / align;
            this.chunks = chunks;
            this.caller = caller;
        }

        /** Claims and runs chunks until none is left. */
        void work(int worker) {
            for (int c; (c = next.getAndIncrement()) < chunks; ) {
                try {
                    int from = Math.min(n, (int) ((long) units * c / chunks) * align);
                    int to = Math.min(n, (int) ((long) units * (c + 1) / chunks) * align);
                    task.run(worker, from, to);
                } catch (Throwable t) {
                    failure = t;
                }
                if (done.incrementAndGet() == chunks) LockSupport.unpark(caller);
            }
        }
    }

    private final int size;
    private final Thread[] workers;
    private volatile Section current;
    private volatile boolean closed;

    WorkerPool(int size) {
        if (size < 1) throw new IllegalArgumentException("thread count must be at least 1, was " + size);
        this.size = size;
        workers = new Thread[size - 1];
        for (int i = 0; i < workers.length; i++) {
            int worker = i + 1;
            workers[i] = Thread.ofPlatform().daemon().name("cpu-engine-" + worker).start(() -> work(worker));
        }
    }

    int size() {
        return size;
    }

    /** Runs {@code task} over {@code 0..n-1} in chunks whose bounds are multiples of {@code align}. */
    void run(int n, int align, RangeTask task) {
        int units = (n + align - 1) / align;
        int chunks = Math.min(units, size * CHUNKS_PER_THREAD);
        if (size == 1 || chunks <= 1) {
            task.run(0, 0, n);
            return;
        }
        Section section = new Section(task, n, align, chunks, Thread.currentThread());
        current = section;
        for (Thread w : workers) LockSupport.unpark(w);
        section.work(0);
        for (int spins = 0; section.done.get() != chunks; spins++) {
            if (spins < SPINS) Thread.onSpinWait();
            else LockSupport.park(this);
        }
        Throwable t = section.failure;
        if (t instanceof RuntimeException e) throw e;
        if (t instanceof Error e) throw e;
        if (t != null) throw new IllegalStateException(t);
    }

    private void work(int worker) {
        Section seen = null;
        while (true) {
            Section s;
            for (int spins = 0; (s = current) == seen; spins++) {
                if (closed) return;
                if (spins < SPINS) Thread.onSpinWait();
                else LockSupport.park(this);
            }
            seen = s;
            s.work(worker);
        }
    }

    @Override
    public void close() {
        closed = true;
        for (Thread w : workers) LockSupport.unpark(w);
    }
}
