package io.dejavu.sampling;

/**
 * Orders token ids by a value (a logit), largest first, ties to the lowest id. Top-k, top-p and top-logprobs need only
 * the first few of a 50k-token vocabulary, so nothing here sorts it all: {@link #top} keeps a bounded heap of the best
 * k seen in one scan, and an instance is a lazy max-heap (built in O(n), O(log n) per id taken) for when how many are
 * needed is known only while taking them.
 */
final class DescendingOrder {
    private final float[] values;
    private final int[] heap;
    private int size;

    /** Orders the ids in heap[0, size), rearranging that array in place. */
    DescendingOrder(float[] values, int[] heap, int size) {
        this.values = values;
        this.heap = heap;
        this.size = size;
        for (int i = size / 2 - 1; i >= 0; i--) siftDown(i);
    }

    boolean hasNext() {
        return size > 0;
    }

    int next() {
        int top = heap[0];
        heap[0] = heap[--size];
        siftDown(0);
        return top;
    }

    /** Writes the k (at most n) first ids of [0, n) in order into out[0, k) and returns k. */
    static int top(float[] values, int n, int k, int[] out) {
        k = Math.min(k, n);
        if (k <= 0) return 0;
        // A heap of the best k so far with the worst of them at the root: most ids fail one comparison with it.
        int size = 0;
        for (int id = 0; id < n; id++) {
            if (size < k) {
                int i = size++;
                while (i > 0 && before(values, out[(i - 1) / 2], id)) {
                    out[i] = out[(i - 1) / 2];
                    i = (i - 1) / 2;
                }
                out[i] = id;
            } else if (before(values, id, out[0])) {
                siftDownWorst(values, out, size, id);
            }
        }
        for (int last = k - 1; last > 0; last--) {
            int worst = out[0];
            siftDownWorst(values, out, last, out[last]);
            out[last] = worst;
        }
        return k;
    }

    private static boolean before(float[] values, int a, int b) {
        float va = values[a], vb = values[b];
        return va > vb || (va == vb && a < b);
    }

    /** Puts item at the root of the worst-first heap out[0, size) and restores it. */
    private static void siftDownWorst(float[] values, int[] heap, int size, int item) {
        int i = 0;
        while (true) {
            int child = 2 * i + 1;
            if (child >= size) break;
            if (child + 1 < size && before(values, heap[child], heap[child + 1])) child++;
            if (!before(values, item, heap[child])) break;
            heap[i] = heap[child];
            i = child;
        }
        heap[i] = item;
    }

    private void siftDown(int i) {
        int item = heap[i];
        while (true) {
            int child = 2 * i + 1;
            if (child >= size) break;
            if (child + 1 < size && before(values, heap[child + 1], heap[child])) child++;
            if (!before(values, heap[child], item)) break;
            heap[i] = heap[child];
            i = child;
        }
        heap[i] = item;
    }
}
