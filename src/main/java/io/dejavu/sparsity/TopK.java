package io.dejavu.sparsity;

import java.util.Arrays;

/** Selection of the k largest scores, the way a predictor's output becomes a set of neurons or heads. */
public final class TopK {
    private TopK() {
    }

    /**
     * Writes into {@code selected} the indices of the {@code k} largest of scores[so..so+n), in increasing index
     * order (so the gathered weight rows are read front to back); {@code scratch} holds at least n floats.
     * Returns k.
     */
    public static int select(float[] scores, int so, int n, int k, int[] selected, float[] scratch) {
        if (k >= n) {
            for (int i = 0; i < n; i++) selected[i] = i;
            return n;
        }
        if (k <= 0) return 0;
        System.arraycopy(scores, so, scratch, 0, n);
        float threshold = kthLargest(scratch, n, k);
        int above = 0;
        for (int i = 0; i < n; i++) if (scores[so + i] > threshold) above++;
        int ties = k - above, count = 0;
        for (int i = 0; i < n && count < k; i++) {
            float s = scores[so + i];
            if (s > threshold || (s == threshold && ties-- > 0)) selected[count++] = i;
        }
        return count;
    }

    /** The k-th largest of a[0..n) (k >= 1), by quickselect; reorders a. */
    static float kthLargest(float[] a, int n, int k) {
        int lo = 0, hi = n - 1, target = k - 1;
        while (lo < hi) {
            float pivot = a[(lo + hi) >>> 1];
            int i = lo, j = hi;
            while (i <= j) {
                while (a[i] > pivot) i++;
                while (a[j] < pivot) j--;
                if (i <= j) {
                    float t = a[i];
                    a[i] = a[j];
                    a[j] = t;
                    i++;
                    j--;
                }
            }
            if (target <= j) hi = j;
            else if (target >= i) lo = i;
            else return a[target];
        }
        return a[target];
    }

    /**
     * Recall of top-k selection for every k: element k is the share of the true positives of {@code rows} that are
     * among the k highest scores of their token (k = 0..out).
     */
    public static double[] recallCurve(LowRankPredictor p, float[] inputs, LabelMatrix labels, int[] rows) {
        int out = p.out();
        long[] atRank = new long[out + 1];
        long positives = 0;
        float[] hidden = new float[p.rank()], scores = new float[out], sorted = new float[out];
        for (int row : rows) {
            p.scores(inputs, row * p.in(), hidden, scores, 0);
            System.arraycopy(scores, 0, sorted, 0, out);
            Arrays.sort(sorted);
            for (int j = 0; j < out; j++) {
                if (!labels.get(row, j)) continue;
                positives++;
                // rank = how many scores are strictly larger: this neuron is in the top-k for every k > rank
                int at = Arrays.binarySearch(sorted, Math.nextUp(scores[j]));
                int firstLarger = at >= 0 ? firstIndexOf(sorted, at) : -at - 1;
                atRank[out - firstLarger]++;
            }
        }
        double[] recall = new double[out + 1];
        long cumulative = 0;
        for (int k = 1; k <= out; k++) {
            cumulative += atRank[k - 1];
            recall[k] = positives == 0 ? 1 : (double) cumulative / positives;
        }
        recall[0] = positives == 0 ? 1 : 0;
        return recall;
    }

    /** A score threshold and the share of (token, neuron) pairs at or above it. */
    public record Threshold(float threshold, double keptShare, double recall) {
    }

    /**
     * For each target, the highest threshold whose selection "score >= threshold" keeps at least that share of the
     * true positives of {@code rows}; unlike a top-k, the number kept then varies with the token.
     */
    public static Threshold[] thresholdsFor(LowRankPredictor p, float[] inputs, LabelMatrix labels, int[] rows,
                                            double... targets) {
        int out = p.out();
        float[] all = new float[rows.length * out];
        long positives = 0;
        float[] hidden = new float[p.rank()];
        for (int r = 0; r < rows.length; r++) {
            p.scores(inputs, rows[r] * p.in(), hidden, all, r * out);
            positives += labels.count(rows[r]);
        }
        float[] positiveScores = new float[(int) positives];
        int i = 0;
        for (int r = 0; r < rows.length; r++) {
            for (int j = 0; j < out; j++) if (labels.get(rows[r], j)) positiveScores[i++] = all[r * out + j];
        }
        Arrays.sort(positiveScores);
        float[] sorted = all.clone();
        Arrays.sort(sorted);
        Threshold[] result = new Threshold[targets.length];
        for (int t = 0; t < targets.length; t++) {
            // keep the top ceil(target * positives) positive scores
            int needed = (int) Math.ceil(targets[t] * positives);
            float threshold = needed == 0 ? Float.POSITIVE_INFINITY : positiveScores[positiveScores.length - needed];
            long kept = sorted.length - firstAtLeast(sorted, threshold);
            long hits = positiveScores.length - firstAtLeast(positiveScores, threshold);
            result[t] = new Threshold(threshold, (double) kept / all.length, positives == 0 ? 1 : (double) hits / positives);
        }
        return result;
    }

    /** The first index of sorted whose value is >= x (sorted.length if none). */
    private static int firstAtLeast(float[] sorted, float x) {
        int lo = 0, hi = sorted.length;
        while (lo < hi) {
            int mid = (lo + hi) >>> 1;
            if (sorted[mid] < x) lo = mid + 1;
            else hi = mid;
        }
        return lo;
    }

    private static int firstIndexOf(float[] sorted, int at) {
        while (at > 0 && sorted[at - 1] == sorted[at]) at--;
        return at;
    }
}
