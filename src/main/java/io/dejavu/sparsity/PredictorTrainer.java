package io.dejavu.sparsity;

import java.util.Arrays;
import java.util.Random;
import java.util.stream.IntStream;

/**
 * Trains a {@link LowRankPredictor} as the authors do: sigmoid of the scores against 0/1 labels, binary
 * cross-entropy weighted so that the rare positives count (with w the share of positives in the mini-batch plus an
 * offset, positives weigh 1 - w and negatives w), Adam with a cosine-decayed learning rate. The rows of a mini-batch are split over the cores; each
 * core keeps its own gradient, summed before the update.
 */
public final class PredictorTrainer {
    /**
     * @param positiveOffset added to the batch's share of positives in the loss weight (0.005 for MLP neurons in
     *                       the authors' code, 0 for heads)
     */
    public record Options(int rank, int epochs, int batchSize, float learningRate, float positiveOffset, long seed) {
        public Options {
            if (rank < 1 || epochs < 1 || batchSize < 1 || !(learningRate > 0)) {
                throw new IllegalArgumentException("rank, epochs, batch size and learning rate must be positive");
            }
        }
    }

    /** The trained predictor and, per epoch, the validation recall at probability 0.5 (scores >= 0). */
    public record Result(LowRankPredictor predictor, double[] recallPerEpoch) {
    }

    /** Called after each epoch with the number of epochs done. */
    public interface EpochListener {
        void epochDone(int epochs);
    }

    private static final float BETA1 = 0.9f, BETA2 = 0.999f, EPSILON = 1e-8f;

    private final int threads;

    public PredictorTrainer(int threads) {
        if (threads < 1) throw new IllegalArgumentException("threads must be at least 1, was " + threads);
        this.threads = threads;
    }

    /**
     * @param inputs    rows of {@code width} floats; row i is the predictor input of token i
     * @param labels    row i: the labels of token i
     * @param trainRows the tokens to train on
     * @param validRows the tokens to measure recall on
     */
    public Result train(float[] inputs, int width, LabelMatrix labels, int[] trainRows, int[] validRows, Options o,
                        EpochListener listener) {
        Random random = new Random(o.seed());
        LowRankPredictor p = LowRankPredictor.initial(width, o.rank(), labels.columns(), random);
        Adam downAdam = new Adam(p.down().length), upAdam = new Adam(p.up().length);
        Worker[] workers = new Worker[threads];
        for (int t = 0; t < threads; t++) workers[t] = new Worker(p);
        int[] order = trainRows.clone();
        double[] recall = new double[o.epochs()];
        int step = 0, steps = o.epochs() * ((order.length + o.batchSize() - 1) / o.batchSize());
        for (int epoch = 0; epoch < o.epochs(); epoch++) {
            shuffle(order, random);
            for (int b0 = 0; b0 < order.length; b0 += o.batchSize()) {
                int[] batch = Arrays.copyOfRange(order, b0, Math.min(order.length, b0 + o.batchSize()));
                long positives = 0;
                for (int row : batch) positives += labels.count(row);
                float w = (float) positives / ((long) batch.length * labels.columns()) + o.positiveOffset();
                float scale = 1f / ((long) batch.length * labels.columns());
                IntStream.range(0, threads).parallel().forEach(t -> workers[t].gradient(inputs, labels, batch,
                        t * batch.length / threads, (t + 1) * batch.length / threads, w, scale));
                for (int t = 1; t < threads; t++) {
                    add(workers[0].gradDown, workers[t].gradDown);
                    add(workers[0].gradUp, workers[t].gradUp);
                }
                // Large steps early, small ones at the end: the recall keeps improving in the last epochs.
                float lr = (float) (o.learningRate() * (0.05 + 0.95 * 0.5 * (1 + Math.cos(Math.PI * step / steps))));
                step++;
                downAdam.update(p.down(), workers[0].gradDown, lr, step);
                upAdam.update(p.up(), workers[0].gradUp, lr, step);
            }
            recall[epoch] = recallAtHalf(p, inputs, labels, validRows);
            if (listener != null) listener.epochDone(epoch + 1);
        }
        return new Result(p, recall);
    }

    /** Share of the true positives of {@code rows} whose score is >= 0 (probability >= 0.5). */
    public static double recallAtHalf(LowRankPredictor p, float[] inputs, LabelMatrix labels, int[] rows) {
        float[] hidden = new float[p.rank()], scores = new float[p.out()];
        long hits = 0, positives = 0;
        for (int row : rows) {
            p.scores(inputs, row * p.in(), hidden, scores, 0);
            for (int j = 0; j < p.out(); j++) {
                if (labels.get(row, j)) {
                    positives++;
                    if (scores[j] >= 0) hits++;
                }
            }
        }
        return positives == 0 ? 1 : (double) hits / positives;
    }

    private static void add(float[] into, float[] from) {
        for (int i = 0; i < into.length; i++) into[i] += from[i];
    }

    private static void shuffle(int[] a, Random random) {
        for (int i = a.length - 1; i > 0; i--) {
            int j = random.nextInt(i + 1), t = a[i];
            a[i] = a[j];
            a[j] = t;
        }
    }

    /**
     * One core's share of a mini-batch: forward, loss gradient and backward into its own gradient arrays. Rows go
     * through in blocks of {@value #BLOCK}, so that each row of the weights and of their gradients is loaded once per
     * block rather than once per token: an MLP predictor's {@code up} and its gradient are 1 MB each at rank 128, as
     * large as a core's L2 cache, and streaming them for every token made training memory-bound.
     */
    private static final class Worker {
        static final int BLOCK = 8;
        final LowRankPredictor p;
        final float[] gradDown, gradUp, z, s, g, dz;
        final int[] offsets = new int[BLOCK];

        Worker(LowRankPredictor p) {
            this.p = p;
            gradDown = new float[p.down().length];
            gradUp = new float[p.up().length];
            z = new float[BLOCK * p.rank()];
            dz = new float[BLOCK * p.rank()];
            s = new float[BLOCK * p.out()];
            g = new float[BLOCK * p.out()];
        }

        void gradient(float[] inputs, LabelMatrix labels, int[] batch, int from, int to, float w, float scale) {
            Arrays.fill(gradDown, 0);
            Arrays.fill(gradUp, 0);
            int in = p.in(), rank = p.rank(), out = p.out();
            float[] down = p.down(), up = p.up();
            float positiveWeight = (1 - w) * scale, negativeWeight = w * scale;
            for (int b0 = from; b0 < to; b0 += BLOCK) {
                int n = Math.min(BLOCK, to - b0);
                for (int r = 0; r < n; r++) {
                    offsets[r] = batch[b0 + r] * in;
                    for (int k = 0; k < rank; k++) z[r * rank + k] = Vectors.dot(down, k * in, inputs, offsets[r], in);
                }
                Vectors.blockScores(up, z, n, rank, out, s);
                Vectors.sigmoid(s, g, 0, n * out);
                for (int r = 0; r < n; r++) {
                    int row = batch[b0 + r];
                    for (int j = 0; j < out; j++) {
                        // d(weighted BCE)/d(score) = weight * (sigmoid(score) - label)
                        int o = r * out + j;
                        g[o] = labels.get(row, j) ? (g[o] - 1) * positiveWeight : g[o] * negativeWeight;
                    }
                }
                Arrays.fill(dz, 0);
                Vectors.blockBackUp(g, z, up, n, rank, out, gradUp, dz);
                Vectors.blockBackDown(dz, inputs, offsets, n, rank, in, gradDown);
            }
        }
    }

    /** Adam's moment estimates for one weight array. */
    private static final class Adam {
        final float[] m, v;

        Adam(int size) {
            m = new float[size];
            v = new float[size];
        }

        void update(float[] w, float[] g, float lr, int step) {
            float c1 = (float) (1 - Math.pow(BETA1, step)), c2 = (float) (1 - Math.pow(BETA2, step));
            for (int i = 0; i < w.length; i++) {
                m[i] = BETA1 * m[i] + (1 - BETA1) * g[i];
                v[i] = BETA2 * v[i] + (1 - BETA2) * g[i] * g[i];
                w[i] -= lr * (m[i] / c1) / ((float) Math.sqrt(v[i] / c2) + EPSILON);
            }
        }
    }
}
