package io.dejavu.sparsity;

import org.junit.jupiter.api.Test;

import java.util.Arrays;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

class TopKTest {
    @Test
    void selectsTheLargestScoresInIndexOrder() {
        Random random = new Random(3);
        for (int trial = 0; trial < 200; trial++) {
            int n = 1 + random.nextInt(300), k = random.nextInt(n + 2);
            float[] scores = new float[n + 5];
            // few distinct values, so ties are common
            for (int i = 0; i < scores.length; i++) scores[i] = random.nextInt(20) - 10;
            int[] selected = new int[n];
            int count = TopK.select(scores, 5, n, k, selected, new float[n]);
            assertEquals(Math.min(k, n), count);
            float[] sorted = Arrays.copyOfRange(scores, 5, 5 + n);
            Arrays.sort(sorted);
            double expectedSum = 0, sum = 0;
            for (int i = 0; i < count; i++) {
                expectedSum += sorted[n - 1 - i];
                sum += scores[5 + selected[i]];
                if (i > 0) assertEquals(true, selected[i] > selected[i - 1]);
            }
            assertEquals(expectedSum, sum, 1e-9);
        }
    }

    @Test
    void recallCurveCountsTruePositivesWithinTopK() {
        // One input dimension, identity-like predictor: scores = x * up, so the ranking is the order of up.
        float[] up = {3, 2, 1, 0};
        LowRankPredictor p = new LowRankPredictor(1, 1, 4, new float[]{1}, up);
        LabelMatrix labels = new LabelMatrix(2, 4);
        labels.set(0, 0);
        labels.set(0, 2);
        labels.set(1, 3);
        double[] curve = TopK.recallCurve(p, new float[]{1, 1}, labels, new int[]{0, 1});
        assertArrayEquals(new double[]{0, 1 / 3.0, 1 / 3.0, 2 / 3.0, 1}, curve, 1e-12);
    }
}
