package io.dejavu.bench;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.dejavu.engine.Sequence;
import io.dejavu.engine.Step;
import io.dejavu.engine.cpu.CpuEngine;
import io.dejavu.engine.cpu.ForwardProbe;
import io.dejavu.model.OptConfig;
import io.dejavu.model.OptModel;
import io.dejavu.model.Tensor;
import io.dejavu.sparsity.Calibrator;
import io.dejavu.sparsity.LowRankPredictor;
import io.dejavu.sparsity.Predictors;
import io.dejavu.tokenizer.Tokenizer;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.IntStream;

/**
 * Per-layer MLP operating points measured on the calibration text's validation windows (the calibrator's own,
 * {@link Calibrator#windows} and {@link Calibrator#validates}; never the dev text), for docs/SPARSITY.md's
 * "Per-layer operating points":
 * <ul>
 * <li>per layer and level R, the score threshold that keeps a share R of the active neurons (count recall, as the
 * calibrator) and the one that keeps a share R of their activation mass (fc1 output x the norm of its fc2 column),
 * with the share of neurons each keeps;</li>
 * <li>the damage to the next-token distribution, KL(dense || sparse) and the share of tokens whose dense top-1
 * changes, with every layer at one level and with one layer sparse at a time;</li>
 * <li>the levels that minimise the summed single-layer damage (KL or flips) within a budget of kept neurons.</li>
 * </ul>
 * Sparsity is applied by masking the fc1 outputs of a dense pass (equal to the sparse path, docs/SPARSITY.md), so
 * any threshold can be tried without writing predictors. Prints JSON lines. Needs about 3 GB of heap ({@code -Xmx6g}).
 * <pre>
 * MODEL PREDICTORS CALIBRATION_TEXT
 * </pre>
 */
public final class OperatingPointStudy {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final double[] LEVELS = {0.975, 0.98, 0.985, 0.99, 0.995, 0.998};

    private final OptConfig c;
    private final CpuEngine engine;
    private final Predictors p;
    private final List<int[]> windows = new ArrayList<>();
    private final int tokens;
    private final float[][] denseLogProbs;
    private final int[] denseTop;

    private OperatingPointStudy(OptModel model, CpuEngine engine, Predictors p, int[] ids) {
        this.c = model.config();
        this.engine = engine;
        this.p = p;
        List<int[]> all = Calibrator.windows(c, ids);
        int n = 0;
        for (int w = 0; w < all.size(); w++) {
            if (!Calibrator.validates(w, all.size())) continue;
            windows.add(all.get(w));
            n += all.get(w).length;
        }
        tokens = n;
        denseLogProbs = new float[tokens][];
        denseTop = new int[tokens];
    }

    public static void main(String[] args) throws IOException {
        Path modelDir = Path.of(args[0]), predictorDir = Path.of(args[1]);
        try (OptModel model = OptModel.load(modelDir); CpuEngine engine = new CpuEngine(model)) {
            Predictors p = Predictors.read(predictorDir, model.config());
            int[] ids = Tokenizer.load(modelDir).encode(Files.readString(Path.of(args[2])));
            if (ids.length > 200_000) ids = Arrays.copyOf(ids, 200_000);
            new OperatingPointStudy(model, engine, p, ids).run(model);
        }
    }

    private void run(OptModel model) throws IOException {
        int layers = c.numHiddenLayers(), ffn = c.ffnDim();
        float[][] scores = new float[layers][tokens * ffn], acts = new float[layers][tokens * ffn];
        long t0 = System.nanoTime();
        pass(null, scores, acts, true);
        log("dense", Map.of("tokens", tokens, "seconds", (System.nanoTime() - t0) / 1e9));
        // per layer: thresholds at each level, by count recall and by mass recall
        float[][] countThr = new float[layers][LEVELS.length], massThr = new float[layers][LEVELS.length];
        double[][] countKept = new double[layers][LEVELS.length], massKept = new double[layers][LEVELS.length];
        for (int l = 0; l < layers; l++) {
            float[] norms = columnNorms(model.weights().layers().get(l).fc2Weight(), c.hiddenSize(), ffn);
            Curve curve = Curve.of(scores[l], acts[l], norms, ffn);
            for (int i = 0; i < LEVELS.length; i++) {
                countThr[l][i] = curve.byCount(LEVELS[i]);
                massThr[l][i] = curve.byMass(LEVELS[i]);
                countKept[l][i] = curve.kept(countThr[l][i]);
                massKept[l][i] = curve.kept(massThr[l][i]);
                Map<String, Object> line = new LinkedHashMap<>();
                line.put("layer", l);
                line.put("level", LEVELS[i]);
                line.put("count_threshold", countThr[l][i]);
                line.put("count_kept", countKept[l][i]);
                line.put("count_mass_recall", curve.massRecall(countThr[l][i]));
                line.put("mass_threshold", massThr[l][i]);
                line.put("mass_kept", massKept[l][i]);
                line.put("mass_count_recall", curve.countRecall(massThr[l][i]));
                log("curve", line);
            }
        }
        scores = null;
        acts = null;
        // whole configurations at uniform levels
        for (int i = 0; i < LEVELS.length; i++) {
            evaluate("count_uniform_" + LEVELS[i], column(countThr, i));
            evaluate("mass_uniform_" + LEVELS[i], column(massThr, i));
        }
        // one layer sparse at a time: its damage at each level, KL and flips
        double[][] kl = new double[layers][LEVELS.length], flips = new double[layers][LEVELS.length];
        for (int l = 0; l < layers; l++) {
            for (int i = 0; i < LEVELS.length; i++) {
                float[] thr = new float[layers];
                Arrays.fill(thr, Float.NaN);
                thr[l] = countThr[l][i];
                double[] r = evaluate("count_layer" + l + "_" + LEVELS[i], thr);
                kl[l][i] = r[0];
                flips[l][i] = r[1];
            }
        }
        // allocations: the levels that minimise the summed single-layer damage within a mean kept share, from the
        // kept share of the uniform recall-0.98 point (the calibrator's default) up to half a point more
        double base = 0;
        for (int l = 0; l < layers; l++) base += countKept[l][1] / layers;
        for (double extra : new double[]{0, 0.0025, 0.005}) {
            for (String objective : new String[]{"kl", "flips"}) {
                int[] choice = allocate(objective.equals("kl") ? kl : flips, countKept, base + extra);
                float[] thr = new float[layers];
                for (int l = 0; l < layers; l++) thr[l] = countThr[l][choice[l]];
                Map<String, Object> line = new LinkedHashMap<>();
                line.put("objective", objective);
                line.put("budget_kept", base + extra);
                line.put("levels", IntStream.of(choice).mapToDouble(i -> LEVELS[i]).toArray());
                log("allocation", line);
                evaluate("alloc_" + objective + "_" + (base + extra), thr);
            }
        }
    }

    private static float[] column(float[][] m, int i) {
        float[] out = new float[m.length];
        for (int l = 0; l < m.length; l++) out[l] = m[l][i];
        return out;
    }

    /** Brute force over the level of every layer. */
    private static int[] allocate(double[][] kl, double[][] kept, double budget) {
        int layers = kl.length, levels = LEVELS.length;
        int[] best = null, cur = new int[layers];
        double bestKl = Double.POSITIVE_INFINITY;
        int combos = (int) Math.pow(levels, layers);
        for (int code = 0; code < combos; code++) {
            int x = code;
            double k = 0, d = 0;
            for (int l = 0; l < layers; l++) {
                cur[l] = x % levels;
                x /= levels;
                k += kept[l][cur[l]] / layers;
                d += kl[l][cur[l]];
            }
            if (k <= budget && d < bestKl) {
                bestKl = d;
                best = cur.clone();
            }
        }
        return best;
    }

    /** Returns {mean KL, flip share, mean kept}. */
    private double[] evaluate(String name, float[] thresholds) throws IOException {
        long t0 = System.nanoTime();
        double[] r = pass(thresholds, null, null, false);
        Map<String, Object> line = new LinkedHashMap<>();
        line.put("name", name);
        line.put("thresholds", thresholds);
        line.put("kl", r[0]);
        line.put("flips", r[1]);
        line.put("mlp_skipped", 1 - r[2]);
        line.put("kept_by_layer", Arrays.copyOfRange(r, 3, r.length));
        line.put("seconds", (System.nanoTime() - t0) / 1e9);
        log("eval", line);
        return r;
    }

    private static void log(String kind, Map<String, Object> m) throws IOException {
        Map<String, Object> line = new LinkedHashMap<>();
        line.put("kind", kind);
        line.putAll(m);
        System.out.println(JSON.writeValueAsString(line));
        System.out.flush();
    }

    /**
     * One pass over the validation windows. Dense (record): stores the dense log-probabilities and, per layer, the
     * predictor scores and fc1 outputs. Otherwise masks the fc1 outputs of layers with a threshold (NaN: dense) and
     * compares with the dense log-probabilities.
     */
    private double[] pass(float[] thresholds, float[][] scores, float[][] acts, boolean record) {
        int layers = c.numHiddenLayers(), ffn = c.ffnDim(), hidden = c.hiddenSize();
        long[] kept = new long[layers];
        double klSum = 0;
        long flips = 0;
        int base = 0;
        for (int[] input : windows) {
            int rows = input.length, b = base;
            float[][] mask = new float[layers][];
            ForwardProbe probe = new ForwardProbe() {
                @Override
                public void mlpInput(int layer, float[] h, int n) {
                    boolean sparse = thresholds != null && !Float.isNaN(thresholds[layer]);
                    if (!record && !sparse) return;
                    LowRankPredictor mlp = p.layers().get(layer).mlp();
                    float[] s = record ? scores[layer] : new float[n * ffn];
                    int so = record ? b * ffn : 0;
                    IntStream.range(0, n).parallel().forEach(t -> {
                        float[] z = new float[hidden], u = new float[mlp.rank()];
                        LowRankPredictor.standardize(h, t * hidden, z, 0, hidden);
                        mlp.scores(z, 0, u, s, so + t * ffn);
                    });
                    if (sparse) mask[layer] = s;
                }

                @Override
                public void mlpActivations(int layer, float[] f, int n) {
                    if (record) System.arraycopy(f, 0, acts[layer], b * ffn, n * ffn);
                    float[] s = mask[layer];
                    if (s == null) {
                        kept[layer] += (long) n * ffn;
                        return;
                    }
                    float thr = thresholds[layer];
                    long k = 0;
                    for (int i = 0; i < n * ffn; i++) {
                        if (s[i] >= thr) k++;
                        else f[i] = 0;
                    }
                    kept[layer] += k;
                }
            };
            float[][] logits;
            try (Sequence s = engine.newSequence()) {
                logits = engine.forward(List.of(new Step(s, input, true)), probe).getFirst();
            }
            for (int t = 0; t < rows; t++) {
                float[] lp = logSoftmax(logits[t]);
                if (record) {
                    denseLogProbs[base + t] = lp;
                    denseTop[base + t] = argmax(lp);
                    continue;
                }
                float[] d = denseLogProbs[base + t];
                double kl = 0;
                for (int v = 0; v < lp.length; v++) kl += Math.exp(d[v]) * (d[v] - lp[v]);
                klSum += kl;
                if (argmax(lp) != denseTop[base + t]) flips++;
            }
            base += rows;
        }
        double[] out = new double[3 + layers];
        out[0] = klSum / tokens;
        out[1] = (double) flips / tokens;
        for (int l = 0; l < layers; l++) {
            out[3 + l] = (double) kept[l] / ((long) tokens * ffn);
            out[2] += out[3 + l] / layers;
        }
        return out;
    }

    private static float[] logSoftmax(float[] x) {
        float max = Float.NEGATIVE_INFINITY;
        for (float v : x) max = Math.max(max, v);
        double sum = 0;
        for (float v : x) sum += Math.exp(v - max);
        float lse = (float) (max + Math.log(sum));
        float[] out = new float[x.length];
        for (int i = 0; i < x.length; i++) out[i] = x[i] - lse;
        return out;
    }

    private static int argmax(float[] x) {
        int best = 0;
        for (int i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
        return best;
    }

    private static float[] columnNorms(Tensor fc2, int hidden, int ffn) {
        float[] w = fc2.toFloatArray();
        float[] norms = new float[ffn];
        for (int i = 0; i < hidden; i++) for (int j = 0; j < ffn; j++) norms[j] += w[i * ffn + j] * w[i * ffn + j];
        for (int j = 0; j < ffn; j++) norms[j] = (float) Math.sqrt(norms[j]);
        return norms;
    }

    /** One layer's scores on the validation rows, with the positives sorted by score and their weights. */
    private record Curve(float[] sortedAll, float[] posScoresDesc, double[] cumMass) {
        static Curve of(float[] scores, float[] acts, float[] norms, int ffn) {
            int positives = 0;
            for (float a : acts) if (a > 0) positives++;
            long[] keys = new long[positives];
            int i = 0;
            for (int x = 0; x < acts.length; x++) {
                if (acts[x] > 0) keys[i++] = ((long) sortable(scores[x]) << 32) | x;
            }
            Arrays.sort(keys);
            float[] desc = new float[positives];
            double[] cum = new double[positives + 1];
            for (int k = 0; k < positives; k++) {
                int x = (int) keys[positives - 1 - k];
                desc[k] = scores[x];
                cum[k + 1] = cum[k] + acts[x] * norms[x % ffn];
            }
            float[] sorted = scores.clone();
            Arrays.sort(sorted);
            return new Curve(sorted, desc, cum);
        }

        private static int sortable(float f) {
            int bits = Float.floatToIntBits(f);
            return bits ^ ((bits >> 31) & 0x7fffffff);
        }

        float byCount(double r) {
            int needed = (int) Math.ceil(r * posScoresDesc.length);
            return posScoresDesc[Math.max(needed, 1) - 1];
        }

        float byMass(double r) {
            double target = r * cumMass[cumMass.length - 1];
            int m = 1;
            while (cumMass[m] < target) m++;
            return posScoresDesc[m - 1];
        }

        double kept(float thr) {
            int lo = 0, hi = sortedAll.length;
            while (lo < hi) {
                int mid = (lo + hi) >>> 1;
                if (sortedAll[mid] < thr) lo = mid + 1;
                else hi = mid;
            }
            return (double) (sortedAll.length - lo) / sortedAll.length;
        }

        int hits(float thr) {
            int m = 0;
            while (m < posScoresDesc.length && posScoresDesc[m] >= thr) m++;
            return m;
        }

        double countRecall(float thr) {
            return (double) hits(thr) / posScoresDesc.length;
        }

        double massRecall(float thr) {
            return cumMass[hits(thr)] / cumMass[cumMass.length - 1];
        }
    }
}
