package io.dejavu.sampling;

import org.junit.jupiter.api.Test;

import java.util.Comparator;
import java.util.Random;
import java.util.stream.IntStream;

import static org.junit.jupiter.api.Assertions.*;

class DescendingOrderTest {
    /** Values with many ties: ids sorted by value descending, then id ascending. */
    private static int[] sortedIds(float[] values) {
        return IntStream.range(0, values.length).boxed()
                .sorted(Comparator.<Integer>comparingDouble(i -> -values[i]).thenComparingInt(i -> i))
                .mapToInt(Integer::intValue).toArray();
    }

    @Test
    void topAndLazyOrderAgreeWithAFullSort() {
        Random random = new Random(5);
        for (int round = 0; round < 50; round++) {
            int n = 1 + random.nextInt(300);
            float[] values = new float[n];
            for (int i = 0; i < n; i++) values[i] = random.nextInt(20) - 10;
            int[] expected = sortedIds(values);

            int k = 1 + random.nextInt(n + 5);
            int[] top = new int[n];
            int count = DescendingOrder.top(values, n, k, top);
            assertEquals(Math.min(k, n), count);
            for (int j = 0; j < count; j++) assertEquals(expected[j], top[j], "top-" + k + " position " + j);

            int[] heap = IntStream.range(0, n).toArray();
            DescendingOrder order = new DescendingOrder(values, heap, n);
            for (int j = 0; j < n; j++) assertEquals(expected[j], order.next(), "lazy position " + j);
            assertFalse(order.hasNext());
        }
        assertEquals(0, DescendingOrder.top(new float[]{1, 2}, 2, 0, new int[2]));
    }
}
