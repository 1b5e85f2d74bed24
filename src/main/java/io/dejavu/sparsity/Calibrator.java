package io.dejavu.sparsity;

import io.dejavu.engine.Sequence;
import io.dejavu.engine.Step;
import io.dejavu.engine.cpu.CpuEngine;
import io.dejavu.model.OptConfig;
import io.dejavu.model.OptModel;

import java.io.PrintStream;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.DoubleStream;
import java.util.stream.IntStream;

/**
 * Calibration as in Deja Vu: run the dense model over a text, record per layer its inputs and labels, train one MLP
 * and one head predictor per layer, and choose per layer the smallest top-k whose recall of the truly active neurons
 * on held-out windows reaches the target. Head predictors read the residual stream entering the previous layer
 * (look-ahead, as the paper); MLP predictors read {@link Options#mlpInput()}. With {@link Options#compareInputs()}
 * predictors on the other inputs are trained too, only to report their recall at the same k.
 */
public final class Calibrator {
    /** Text tokens per window, as the perplexity protocol: 511 after the BOS id (fewer if the context is shorter). */
    static final int WINDOW_TEXT_TOKENS = 511;
    /**
     * The default rank stops growing here: the MLP predictor reads r x (hidden + ffn) weights a token and layer, the
     * bandwidth a sparse GPU step pays. At half of opt-6.7b's hidden size (2048) that is 31% of the dense MLP's bytes,
     * more than the 10% of neurons a sparse step runs; at 512 it is 8%, the rank the GPU benchmark measured at 6.7b
     * (docs/BENCHMARKS.md).
     */
    static final int MAX_DEFAULT_RANK = 512;
    /** Recall targets whose top-k and threshold the JSON reports, to compare operating points without recalibrating. */
    private static final double[] REPORTED_RECALLS = {0.9, 0.93, 0.95, 0.96, 0.97, 0.98, 0.99, 0.995, 0.998};

    /**
     * @param rank         predictor width r; 0 picks half the hidden size (a multiple of 8, as the CUDA engine
     *                     needs), at most {@link #MAX_DEFAULT_RANK}: each step of the rank on opt-mini (128, 192,
     *                     256) kept fewer neurons for the same recall on unseen text, and the neurons it saves pay for
     *                     the default recall target below (docs/SPARSITY.md)
     * @param recallTarget MLP recall the chosen k must reach on the validation windows, per layer; the default 0.995
     *                     is what keeps greedy continuations: on opt-mini at rank 256, 10 of 12 reference prompts
     *                     continue as dense for 64 tokens with 86% of the neurons skipped, against 7 at 0.98
     * @param epochs       passes over the training rows; the default 7 gave opt-mini the 8th's operating point
     *                     (within 0.1 point of kept share in every layer) and keeps its calibration under 10 minutes
     *                     on a two-core machine at rank 256
     * @param maxTokens    text tokens of the calibration text used at most; the default takes all of the shipped
     *                     calibration text (120k opt-mini tokens): predictors trained on 50k of them lost 1-4 points
     *                     of recall on unseen text, and more rows narrow that (docs/SPARSITY.md)
     * @param thresholds   allow a per-layer score threshold where it keeps fewer neurons than the top-k
     */
    public record Options(int rank, int epochs, float learningRate, int batchSize, double recallTarget, int maxTokens,
                          PredictorInput mlpInput, boolean compareInputs, boolean thresholds, int threads) {
        public static Options defaults() {
            return new Options(0, 7, 3e-3f, 256, 0.995, 200_000, PredictorInput.MLP, false, true,
                    Runtime.getRuntime().availableProcessors());
        }

        int rankFor(OptConfig c) {
            return rank > 0 ? rank : Math.max(16, Math.min(MAX_DEFAULT_RANK, c.hiddenSize() / 2 / 8 * 8));
        }
    }

    public record Outcome(Predictors predictors, Map<String, Object> summary) {
    }

    private final PrintStream log;

    public Calibrator(PrintStream log) {
        this.log = log;
    }

    public Outcome run(OptModel model, int[] textIds, Options o) {
        OptConfig c = model.config();
        int[] ids = textIds.length > o.maxTokens() ? Arrays.copyOf(textIds, o.maxTokens()) : textIds;
        if (ids.length == 0) throw new IllegalArgumentException("the calibration text has no tokens");
        long start = System.nanoTime();
        CalibrationData data = collect(model, ids, o.threads());
        double collectSeconds = (System.nanoTime() - start) / 1e9;
        int[][] split = split(data);
        int[] train = split[0], valid = split[1];
        int rank = o.rankFor(c), layers = c.numHiddenLayers(), heads = c.numAttentionHeads();
        int labelHeads = (heads + 1) / 2;
        PredictorTrainer trainer = new PredictorTrainer(o.threads());
        long perEpoch = (long) rank * (2L * c.hiddenSize() + c.ffnDim() + heads) * (o.compareInputs() ? 3 : 1);
        Progress progress = new Progress(log, "train", perEpoch * o.epochs() * layers);
        List<Predictors.Layer> out = new ArrayList<>();
        long trainStart = System.nanoTime();
        for (int l = 0; l < layers; l++) {
            float[] mlpIn = data.predictorInput(l, o.mlpInput()), headsIn = data.predictorInput(l, PredictorInput.LOOKAHEAD);
            LabelMatrix headLabels = data.topHeads(l, labelHeads);
            String what = "layer " + (l + 1) + "/" + layers;
            long mlpUnits = (long) rank * (c.hiddenSize() + c.ffnDim()), headUnits = (long) rank * (c.hiddenSize() + heads);
            PredictorTrainer.Options mlpOptions = new PredictorTrainer.Options(rank, o.epochs(), o.batchSize(),
                    o.learningRate(), 0.005f, 17L * l + 1);
            PredictorTrainer.Options headOptions = new PredictorTrainer.Options(rank, o.epochs(), o.batchSize(),
                    o.learningRate(), 0f, 17L * l + 2);
            var mlp = trainer.train(mlpIn, c.hiddenSize(), data.active[l], train, valid, mlpOptions,
                    e -> progress.advance(mlpUnits, what + " mlp"));
            var head = trainer.train(headsIn, c.hiddenSize(), headLabels, train, valid, headOptions,
                    e -> progress.advance(headUnits, what + " heads"));
            double[] curve = TopK.recallCurve(mlp.predictor(), mlpIn, data.active[l], valid);
            int k = smallestK(curve, o.recallTarget());
            Map<String, Object> stats = new LinkedHashMap<>();
            stats.put("mlp_active_share", round(data.activeShare(l, valid)));
            stats.put("mlp_kept_share", round((double) k / c.ffnDim()));
            stats.put("mlp_recall", round(curve[k]));
            stats.put("mlp_recall_at_half_per_epoch", rounded(mlp.recallPerEpoch()));
            Map<String, Integer> kByRecall = new LinkedHashMap<>();
            for (double r : REPORTED_RECALLS) kByRecall.put(String.valueOf(r), smallestK(curve, r));
            stats.put("mlp_k_by_recall", kByRecall);
            stats.put("heads_overlap_by_keep", rounded(headOverlap(head.predictor(), headsIn, data, l, valid)));
            if (o.compareInputs()) {
                Map<String, Object> mlpRecall = new LinkedHashMap<>();
                for (PredictorInput input : PredictorInput.values()) {
                    if (input == o.mlpInput()) {
                        mlpRecall.put(input.wireName, round(curve[k]));
                        continue;
                    }
                    float[] in = data.predictorInput(l, input);
                    var other = trainer.train(in, c.hiddenSize(), data.active[l], train, valid, mlpOptions,
                            e -> progress.advance(mlpUnits, what + " mlp, " + input.wireName + " input"));
                    mlpRecall.put(input.wireName, round(TopK.recallCurve(other.predictor(), in, data.active[l], valid)[k]));
                }
                stats.put("mlp_recall_at_k_by_input", mlpRecall);
                float[] same = data.predictorInput(l, PredictorInput.LAYER);
                var headSame = trainer.train(same, c.hiddenSize(), headLabels, train, valid, headOptions,
                        e -> progress.advance(headUnits, what + " heads, layer input"));
                stats.put("layer_input_heads_overlap_by_keep", rounded(headOverlap(headSame.predictor(), same, data, l, valid)));
            }
            // Where a score threshold reaches the recall with fewer neurons on average than the top-k, use it.
            TopK.Threshold[] thresholds = TopK.thresholdsFor(mlp.predictor(), mlpIn, data.active[l], valid,
                    DoubleStream.concat(DoubleStream.of(o.recallTarget()), Arrays.stream(REPORTED_RECALLS)).toArray());
            TopK.Threshold threshold = thresholds[0];
            Map<String, Object> thresholdByRecall = new LinkedHashMap<>();
            for (int i = 0; i < REPORTED_RECALLS.length; i++) {
                thresholdByRecall.put(String.valueOf(REPORTED_RECALLS[i]), Map.of("threshold",
                        thresholds[i + 1].threshold(), "kept_share", round(thresholds[i + 1].keptShare())));
            }
            boolean byThreshold = o.thresholds() && threshold.keptShare() < (double) k / c.ffnDim();
            stats.put("mlp_rule", byThreshold ? "threshold" : "top-k");
            stats.put("mlp_threshold_kept_share", round(threshold.keptShare()));
            stats.put("mlp_threshold_recall", round(threshold.recall()));
            stats.put("mlp_threshold_by_recall", thresholdByRecall);
            out.add(new Predictors.Layer(mlp.predictor(), head.predictor(), k,
                    byThreshold ? threshold.threshold() : Float.NaN, heads, stats));
        }
        Map<String, Object> summary = new LinkedHashMap<>();
        summary.put("text_tokens", ids.length);
        summary.put("rows", data.tokens);
        summary.put("train_rows", train.length);
        summary.put("validation_rows", valid.length);
        summary.put("recall_target", o.recallTarget());
        summary.put("epochs", o.epochs());
        summary.put("learning_rate", o.learningRate());
        summary.put("batch_size", o.batchSize());
        summary.put("collect_seconds", round(collectSeconds));
        summary.put("train_seconds", round((System.nanoTime() - trainStart) / 1e9));
        return new Outcome(new Predictors(rank, o.mlpInput(), PredictorInput.LOOKAHEAD, List.copyOf(out)), summary);
    }

    /**
     * The model inputs calibration runs over: the text cut into consecutive windows of {@link #WINDOW_TEXT_TOKENS}
     * tokens (fewer if the context is shorter), each after the BOS id. Public so that studies of the calibrated
     * predictors measure on the very windows the calibrator validated on (see {@link #validates}).
     */
    public static List<int[]> windows(OptConfig c, int[] ids) {
        int window = Math.min(WINDOW_TEXT_TOKENS, c.maxPositionEmbeddings() - 1);
        List<int[]> windows = new ArrayList<>();
        for (int from = 0; from < ids.length; from += window) {
            int to = Math.min(ids.length, from + window);
            int[] input = new int[to - from + 1];
            input[0] = c.bosTokenId();
            System.arraycopy(ids, from, input, 1, to - from);
            windows.add(input);
        }
        return windows;
    }

    /**
     * Whether window w of {@code windows} (two or more) validates rather than trains: every tenth, and the last where
     * there are fewer than ten. A text of one window validates on every tenth token instead.
     */
    public static boolean validates(int w, int windows) {
        return w % 10 == 9 || (windows < 10 && w == windows - 1);
    }

    /** Runs the dense model over windows of the text and records what calibration needs. */
    private CalibrationData collect(OptModel model, int[] ids, int threads) {
        OptConfig c = model.config();
        List<int[]> windows = windows(c, ids);
        int rows = ids.length + windows.size();
        CalibrationData data = new CalibrationData(rows, c.numHiddenLayers(), c.hiddenSize(), c.ffnDim(),
                c.numAttentionHeads(), new HeadContributions(model));
        Progress progress = new Progress(log, "collect", rows);
        try (CpuEngine engine = new CpuEngine(model, threads)) {
            int base = 0;
            for (int w = 0; w < windows.size(); w++) {
                int[] input = windows.get(w);
                try (Sequence s = engine.newSequence()) {
                    engine.forward(List.of(Step.last(s, input)), data.probe(w, base, input.length));
                }
                base += input.length;
                progress.advance(input.length, "window " + (w + 1) + "/" + windows.size());
            }
        }
        return data;
    }

    /** Every tenth window validates; a text of one window validates on every tenth token instead. */
    private static int[][] split(CalibrationData data) {
        int windows = data.window[data.tokens - 1] + 1;
        IntStream all = IntStream.range(0, data.tokens);
        if (windows < 2) {
            return new int[][]{IntStream.range(0, data.tokens).filter(t -> t % 10 != 9).toArray(),
                    IntStream.range(0, data.tokens).filter(t -> t % 10 == 9).toArray()};
        }
        int[] valid = all.filter(t -> validates(data.window[t], windows)).toArray();
        boolean[] isValid = new boolean[data.tokens];
        for (int t : valid) isValid[t] = true;
        return new int[][]{IntStream.range(0, data.tokens).filter(t -> !isValid[t]).toArray(), valid};
    }

    static int smallestK(double[] recallCurve, double target) {
        for (int k = 0; k < recallCurve.length; k++) if (recallCurve[k] >= target) return k;
        return recallCurve.length - 1;
    }

    /**
     * Element k-1: the share of the true top-k heads (by contribution, {@link HeadContributions}) that the
     * predictor's top-k holds, averaged over the tokens, for k = 1..heads.
     */
    static double[] headOverlap(LowRankPredictor p, float[] inputs, CalibrationData data, int layer, int[] rows) {
        int heads = data.heads;
        double[] overlap = new double[heads];
        float[] hidden = new float[p.rank()], scores = new float[heads], scratch = new float[heads];
        int[] predicted = new int[heads], truth = new int[heads];
        for (int t : rows) {
            p.scores(inputs, t * p.in(), hidden, scores, 0);
            for (int k = 1; k <= heads; k++) {
                TopK.select(scores, 0, heads, k, predicted, scratch);
                TopK.select(data.headNorms[layer], t * heads, heads, k, truth, scratch);
                int common = 0;
                for (int i = 0; i < k; i++) for (int j = 0; j < k; j++) if (predicted[i] == truth[j]) common++;
                overlap[k - 1] += (double) common / k;
            }
        }
        for (int k = 0; k < heads; k++) overlap[k] /= rows.length;
        return overlap;
    }

    private static double round(double x) {
        return Math.round(x * 10000) / 10000.0;
    }

    private static double[] rounded(double[] xs) {
        return Arrays.stream(xs).map(Calibrator::round).toArray();
    }
}
