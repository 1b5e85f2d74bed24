package io.dejavu.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.dejavu.engine.Engine;
import io.dejavu.engine.Sequence;
import io.dejavu.engine.Step;
import io.dejavu.engine.cpu.CpuEngine;
import io.dejavu.engine.cpu.ForwardProbe;
import io.dejavu.engine.cpu.SparsityStats;
import io.dejavu.eval.PerplexityEvaluator;
import io.dejavu.model.OptConfig;
import io.dejavu.model.OptModel;
import io.dejavu.sparsity.LowRankPredictor;
import io.dejavu.sparsity.PredictorInput;
import io.dejavu.sparsity.Predictors;
import io.dejavu.sparsity.TopK;
import io.dejavu.tokenizer.Tokenizer;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The quality measurements of docs/SPARSITY.md, one JSON line each on stdout:
 * <pre>
 * greedy MODEL PREDICTORS REFERENCE.json [TOKENS [RECALL]] greedy continuations, sparse vs dense
 * greedy-oracle MODEL REFERENCE.json TOKENS MLP_KEEP_SHARE  the same with exact top-k decode steps
 * recall MODEL PREDICTORS TEXT [TOKENS]                 per-layer recall of the active neurons, dense pass
 * union  MODEL PREDICTORS TEXT                          union size of decode batches of 1..16 sequences
 * oracle MODEL TEXT MLP_KEEP_SHARE HEADS_KEEP [TOKENS]  perplexity with exact top-k of the true activations
 * sparse MODEL PREDICTORS TEXT RECALL HEADS_KEEP [TOKENS] perplexity with the predictors, per-layer k of the
 *                                                        calibration's recall target RECALL (0 keeps the file's,
 *                                                        "dense" runs every neuron);
 *                                                        HEADS_KEEP one number for all layers or one per layer (a,b,..)
 * </pre>
 * Run with the fat jar on the class path: {@code java --add-modules jdk.incubator.vector -cp target/dejavu-serve.jar
 * io.dejavu.bench.SparsityQuality ...}.
 */
public final class SparsityQuality {
    private static final ObjectMapper JSON = new ObjectMapper();

    private SparsityQuality() {
    }

    public static void main(String[] args) throws IOException {
        switch (args[0]) {
            case "greedy" -> greedy(Path.of(args[1]), Path.of(args[2]), Path.of(args[3]),
                    args.length > 4 ? Integer.parseInt(args[4]) : 64, args.length > 5 ? args[5] : "0");
            case "greedy-oracle" -> greedyOracle(Path.of(args[1]), Path.of(args[2]), Integer.parseInt(args[3]),
                    Double.parseDouble(args[4]));
            case "recall" -> recall(Path.of(args[1]), Path.of(args[2]), Path.of(args[3]),
                    args.length > 4 ? Integer.parseInt(args[4]) : Integer.MAX_VALUE);
            case "union" -> union(Path.of(args[1]), Path.of(args[2]), Path.of(args[3]));
            case "oracle" -> oracle(Path.of(args[1]), Path.of(args[2]), Double.parseDouble(args[3]),
                    Integer.parseInt(args[4]), args.length > 5 ? Integer.parseInt(args[5]) : Integer.MAX_VALUE);
            case "sparse" -> sparse(Path.of(args[1]), Path.of(args[2]), Path.of(args[3]), args[4], args[5],
                    args.length > 6 ? Integer.parseInt(args[6]) : Integer.MAX_VALUE);
            default -> throw new IllegalArgumentException("unknown measurement " + args[0]);
        }
    }

    /** Greedy continuations of the reference prompts: dense, sparse decode (dense prompt), sparse throughout. */
    private static void greedy(Path modelDir, Path predictorDir, Path reference, int tokens, String recall)
            throws IOException {
        JsonNode cases = JSON.readTree(Files.readString(reference)).get("cases");
        try (OptModel model = OptModel.load(modelDir); CpuEngine engine = new CpuEngine(model)) {
            engine.attachPredictors(Predictors.read(predictorDir, model.config())
                    .withOperatingPoint(mlpK(model.config(), predictorDir, recall), null));
            int sameDecode = 0, sameAll = 0;
            List<Integer> firstDivergence = new ArrayList<>();
            for (JsonNode c : cases) {
                int[] prompt = JSON.treeToValue(c.get("input_ids"), int[].class);
                int[] dense = greedy(engine, prompt, tokens, false, false);
                int[] decode = greedy(engine, prompt, tokens, false, true);
                int[] all = greedy(engine, prompt, tokens, true, true);
                if (Arrays.equals(dense, decode)) sameDecode++;
                if (Arrays.equals(dense, all)) sameAll++;
                firstDivergence.add(Arrays.mismatch(dense, decode));
            }
            Map<String, Object> line = new LinkedHashMap<>();
            line.put("recall", recall);
            line.put("prompts", cases.size());
            line.put("tokens", tokens);
            line.put("identical_sparse_decode", sameDecode);
            line.put("identical_sparse_prompt_and_decode", sameAll);
            line.put("first_divergence_sparse_decode", firstDivergence);
            line.put("mlp_skipped", engine.sparsityStats().mlpSkipped());
            line.put("heads_skipped", engine.sparsityStats().headsSkipped());
            System.out.println(JSON.writeValueAsString(line));
        }
    }

    private static void greedyOracle(Path modelDir, Path reference, int tokens, double mlpKeep) throws IOException {
        JsonNode cases = JSON.readTree(Files.readString(reference)).get("cases");
        try (OptModel model = OptModel.load(modelDir); CpuEngine engine = new CpuEngine(model)) {
            OptConfig c = model.config();
            ForwardProbe oracle = new OracleProbe(c, (int) Math.round(mlpKeep * c.ffnDim()), c.numAttentionHeads());
            int same = 0;
            for (JsonNode cs : cases) {
                int[] prompt = JSON.treeToValue(cs.get("input_ids"), int[].class);
                int[][] runs = new int[2][tokens];
                for (int run = 0; run < 2; run++) {
                    try (Sequence s = engine.newSequence()) {
                        float[] logits = engine.forward(List.of(Step.last(s, prompt))).getFirst()[0];
                        for (int i = 0; i < tokens; i++) {
                            runs[run][i] = argmax(logits);
                            if (i + 1 < tokens) {
                                logits = engine.forward(List.of(Step.last(s, runs[run][i])), run == 0 ? null : oracle)
                                        .getFirst()[0];
                            }
                        }
                    }
                }
                if (Arrays.equals(runs[0], runs[1])) same++;
            }
            System.out.println(JSON.writeValueAsString(Map.of("oracle_mlp_keep", mlpKeep, "tokens", tokens,
                    "identical_oracle_decode", same, "prompts", cases.size())));
        }
    }

    private static int[] greedy(CpuEngine engine, int[] prompt, int n, boolean sparsePrompt, boolean sparseDecode) {
        int[] out = new int[n];
        try (Sequence s = engine.newSequence()) {
            float[] logits = engine.forward(List.of(new Step(s, prompt, false, sparsePrompt))).getFirst()[0];
            for (int i = 0; i < n; i++) {
                out[i] = argmax(logits);
                if (i + 1 < n) logits = engine.forward(List.of(new Step(s, new int[]{out[i]}, false, sparseDecode))).getFirst()[0];
            }
        }
        return out;
    }

    private static int argmax(float[] x) {
        int best = 0;
        for (int i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
        return best;
    }

    /**
     * Decode batches of B sequences over different parts of the text (each after a dense 64-token prompt, then 64
     * teacher-forced sparse decode steps): the share of neurons the union executes, per layer, against B.
     */
    private static void union(Path modelDir, Path predictorDir, Path text) throws IOException {
        try (OptModel model = OptModel.load(modelDir); CpuEngine engine = new CpuEngine(model)) {
            OptConfig c = model.config();
            engine.attachPredictors(Predictors.read(predictorDir, c));
            int[] ids = Tokenizer.load(modelDir).encode(Files.readString(text));
            int prompt = 64, decode = 64, stride = prompt + decode;
            for (int batch : new int[]{1, 2, 4, 8, 16}) {
                SparsityStats stats = engine.sparsityStats();
                stats.reset();
                // Several batches, so that B = 1 is not one sequence's figure.
                for (int group = 0; group < Math.max(1, 16 / batch); group++) {
                    List<Sequence> seqs = new ArrayList<>();
                    int[] starts = new int[batch];
                    for (int b = 0; b < batch; b++) {
                        starts[b] = ((group * batch + b) * 7919 % (ids.length / stride - 1)) * stride;
                        Sequence s = engine.newSequence();
                        int[] p = new int[prompt + 1];
                        p[0] = c.bosTokenId();
                        System.arraycopy(ids, starts[b], p, 1, prompt);
                        engine.forward(List.of(Step.last(s, p)));
                        seqs.add(s);
                    }
                    stats.reset();
                    for (int i = 0; i < decode; i++) {
                        List<Step> steps = new ArrayList<>();
                        for (int b = 0; b < batch; b++) {
                            steps.add(new Step(seqs.get(b), new int[]{ids[starts[b] + prompt + i]}, false, true));
                        }
                        engine.forward(steps);
                    }
                    seqs.forEach(Sequence::close);
                }
                Map<String, Object> line = new LinkedHashMap<>();
                line.put("batch", batch);
                line.put("mlp_kept", 1 - stats.mlpSkipped());
                line.put("mlp_kept_by_layer", stats.mlpKeptByLayer());
                line.put("heads_kept", 1 - stats.headsSkipped());
                System.out.println(JSON.writeValueAsString(line));
            }
        }
    }

    private static void sparse(Path modelDir, Path predictorDir, Path text, String recall, String headsKeep, int maxTokens)
            throws IOException {
        try (OptModel model = OptModel.load(modelDir); CpuEngine engine = new CpuEngine(model)) {
            OptConfig c = model.config();
            Predictors p = Predictors.read(predictorDir, c);
            int layers = c.numHiddenLayers();
            int[] mlpK = mlpK(c, predictorDir, recall), heads = new int[layers];
            String[] keep = headsKeep.split(",");
            for (int l = 0; l < layers; l++) heads[l] = Integer.parseInt(keep[keep.length == 1 ? 0 : l]);
            engine.attachPredictors(p.withOperatingPoint(mlpK, heads));
            int[] ids = Tokenizer.load(modelDir).encode(Files.readString(text));
            if (ids.length > maxTokens) ids = Arrays.copyOf(ids, maxTokens);
            PerplexityEvaluator.Result r = new PerplexityEvaluator(engine, PerplexityEvaluator.DEFAULT_WINDOW, true)
                    .evaluate(ids, (d, w, t, s) -> { });
            Map<String, Object> line = new LinkedHashMap<>();
            line.put("tokens", r.tokens());
            line.put("perplexity", r.perplexity());
            line.put("recall", recall);
            line.put("mlp_k", mlpK);
            line.put("heads_keep", headsKeep);
            line.put("mlp_skipped", engine.sparsityStats().mlpSkipped());
            line.put("heads_skipped", engine.sparsityStats().headsSkipped());
            System.out.println(JSON.writeValueAsString(line));
        }
    }

    /**
     * Top-k per layer: calibration's k for recall RECALL, every neuron for "dense", the same share in every layer for
     * "share:0.3", null (the file's rule) for "0".
     */
    private static int[] mlpK(OptConfig c, Path predictorDir, String recall) throws IOException {
        int layers = c.numHiddenLayers();
        if (recall.equals("0")) return null;
        int[] mlpK = new int[layers];
        if (recall.equals("dense")) {
            Arrays.fill(mlpK, c.ffnDim());
            return mlpK;
        }
        if (recall.startsWith("share:")) {
            Arrays.fill(mlpK, (int) Math.round(Double.parseDouble(recall.substring(6)) * c.ffnDim()));
            return mlpK;
        }
        JsonNode settings = JSON.readTree(Files.readString(predictorDir.resolve(Predictors.SETTINGS)));
        for (int l = 0; l < layers; l++) {
            mlpK[l] = settings.get("layers").get(l).get("stats").get("mlp_k_by_recall").get(recall).asInt();
        }
        return mlpK;
    }

    /**
     * On a dense pass over the text: per layer, the share of truly active neurons (fc1 output > 0) that the MLP
     * predictor's selection (the file's rule, from the MLP block's input) holds, and the share it selects.
     */
    private static void recall(Path modelDir, Path predictorDir, Path text, int maxTokens) throws IOException {
        try (OptModel model = OptModel.load(modelDir); CpuEngine engine = new CpuEngine(model)) {
            OptConfig c = model.config();
            Predictors p = Predictors.read(predictorDir, c);
            if (p.mlpInput() != PredictorInput.MLP) {
                throw new IllegalArgumentException("this measurement reads the MLP block input only");
            }
            int layers = c.numHiddenLayers(), ffn = c.ffnDim(), hidden = c.hiddenSize();
            long[] active = new long[layers], hits = new long[layers], selected = new long[layers], rows = new long[layers];
            ForwardProbe probe = new ForwardProbe() {
                boolean[][] chosen;

                @Override
                public void mlpInput(int layer, float[] h, int n) {
                    Predictors.Layer x = p.layers().get(layer);
                    chosen = new boolean[n][ffn];
                    float[] z = new float[hidden], u = new float[p.rank()], scores = new float[ffn], tmp = new float[ffn];
                    int[] set = new int[ffn];
                    for (int t = 0; t < n; t++) {
                        LowRankPredictor.standardize(h, t * hidden, z, 0, hidden);
                        x.mlp().scores(z, 0, u, scores, 0);
                        if (x.mlpByThreshold()) {
                            for (int j = 0; j < ffn; j++) chosen[t][j] = scores[j] >= x.mlpThreshold();
                        } else {
                            int count = TopK.select(scores, 0, ffn, x.mlpK(), set, tmp);
                            for (int i = 0; i < count; i++) chosen[t][set[i]] = true;
                        }
                    }
                }

                @Override
                public void mlpActivations(int layer, float[] f, int n) {
                    for (int t = 0; t < n; t++) {
                        for (int j = 0; j < ffn; j++) {
                            boolean on = f[t * ffn + j] > 0;
                            if (on) active[layer]++;
                            if (on && chosen[t][j]) hits[layer]++;
                            if (chosen[t][j]) selected[layer]++;
                        }
                    }
                    rows[layer] += n;
                }
            };
            int[] ids = Tokenizer.load(modelDir).encode(Files.readString(text));
            if (ids.length > maxTokens) ids = Arrays.copyOf(ids, maxTokens);
            new PerplexityEvaluator(new ProbedEngine(engine, probe)).evaluate(ids, (d, w, t, s) -> { });
            double[] recall = new double[layers], kept = new double[layers];
            for (int l = 0; l < layers; l++) {
                recall[l] = (double) hits[l] / active[l];
                kept[l] = (double) selected[l] / (rows[l] * ffn);
            }
            System.out.println(JSON.writeValueAsString(Map.of("tokens", ids.length, "recall_by_layer", recall,
                    "kept_by_layer", kept)));
        }
    }

    /** Perplexity when each token keeps exactly its top share of fc1 outputs and its top heads by output norm. */
    private static void oracle(Path modelDir, Path text, double mlpKeep, int headsKeep, int maxTokens) throws IOException {
        try (OptModel model = OptModel.load(modelDir); CpuEngine engine = new CpuEngine(model)) {
            OptConfig c = model.config();
            int[] ids = Tokenizer.load(modelDir).encode(Files.readString(text));
            if (ids.length > maxTokens) ids = Arrays.copyOf(ids, maxTokens);
            int k = (int) Math.round(mlpKeep * c.ffnDim());
            ForwardProbe probe = new OracleProbe(c, k, headsKeep);
            Engine probed = new ProbedEngine(engine, probe);
            PerplexityEvaluator.Result r = new PerplexityEvaluator(probed).evaluate(ids, (d, w, t, s) -> { });
            Map<String, Object> line = new LinkedHashMap<>();
            line.put("tokens", r.tokens());
            line.put("perplexity", r.perplexity());
            line.put("mlp_keep", mlpKeep);
            line.put("heads_keep", headsKeep);
            System.out.println(JSON.writeValueAsString(line));
        }
    }

    /** Keeps, per token, the k largest fc1 outputs and the heads of largest output norm; zeroes the rest. */
    private record OracleProbe(OptConfig c, int k, int headsKeep) implements ForwardProbe {
        @Override
        public void mlpActivations(int layer, float[] f, int rows) {
            int ffn = c.ffnDim();
            if (k >= ffn) return;
            int[] chosen = new int[ffn];
            float[] scratch = new float[ffn], kept = new float[ffn];
            for (int t = 0; t < rows; t++) {
                int count = TopK.select(f, t * ffn, ffn, k, chosen, scratch);
                Arrays.fill(kept, 0);
                for (int i = 0; i < count; i++) kept[chosen[i]] = f[t * ffn + chosen[i]];
                System.arraycopy(kept, 0, f, t * ffn, ffn);
            }
        }

        @Override
        public void attentionOutput(int layer, float[] a, int rows) {
            int heads = c.numAttentionHeads(), hidden = c.hiddenSize(), dim = hidden / heads;
            if (headsKeep >= heads) return;
            float[] norms = new float[heads], scratch = new float[heads];
            int[] chosen = new int[heads];
            for (int t = 0; t < rows; t++) {
                for (int h = 0; h < heads; h++) {
                    double sum = 0;
                    for (int i = 0; i < dim; i++) sum += a[t * hidden + h * dim + i] * a[t * hidden + h * dim + i];
                    norms[h] = (float) Math.sqrt(sum);
                }
                int count = TopK.select(norms, 0, heads, headsKeep, chosen, scratch);
                boolean[] keep = new boolean[heads];
                for (int i = 0; i < count; i++) keep[chosen[i]] = true;
                for (int h = 0; h < heads; h++) {
                    if (!keep[h]) Arrays.fill(a, t * hidden + h * dim, t * hidden + (h + 1) * dim, 0f);
                }
            }
        }
    }

    /** The CPU engine with a probe on every forward pass, for evaluators that see only {@link Engine}. */
    private record ProbedEngine(CpuEngine engine, ForwardProbe probe) implements Engine {
        @Override
        public OptConfig config() {
            return engine.config();
        }

        @Override
        public String backend() {
            return engine.backend();
        }

        @Override
        public Sequence newSequence() {
            return engine.newSequence();
        }

        @Override
        public List<float[][]> forward(List<Step> steps) {
            return engine.forward(steps, probe);
        }

        @Override
        public void close() {
        }
    }
}
