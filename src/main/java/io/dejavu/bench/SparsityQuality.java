package io.dejavu.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.dejavu.engine.Engine;
import io.dejavu.engine.ForwardingEngine;
import io.dejavu.engine.Sequence;
import io.dejavu.engine.Step;
import io.dejavu.engine.cpu.CpuEngine;
import io.dejavu.engine.cpu.ForwardProbe;
import io.dejavu.engine.cpu.SparsityStats;
import io.dejavu.eval.PerplexityEvaluator;
import io.dejavu.model.OptConfig;
import io.dejavu.model.OptModel;
import io.dejavu.sparsity.HeadContributions;
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
 * recall MODEL PREDICTORS TEXT [TOKENS [RULE,...]]      per-layer recall of the active neurons, dense pass, for
 *                                                        each MLP rule (default 0: the file's)
 * union  MODEL PREDICTORS TEXT                          union size of decode batches of 1..16 sequences
 * oracle MODEL TEXT MLP_KEEP_SHARE HEADS_KEEP [TOKENS [HEADS_BY]]  perplexity with exact top-k of the true
 *                                                        activations; HEADS_KEEP as for sparse; heads ranked by
 *                                                        their output's norm (output, the default: the issue's
 *                                                        oracle) or by their contribution after out_proj
 *                                                        (contribution: what calibration labels by)
 * sparse MODEL PREDICTORS TEXT RULE HEADS_KEEP [TOKENS] perplexity with the predictors and MLP rule RULE;
 *                                                        HEADS_KEEP one number for all layers or one per layer (a,b,..)
 * </pre>
 * An MLP rule: 0 keeps the file's; R (e.g. 0.97) the per-layer top-k of calibration's recall target R;
 * threshold:R its per-layer score threshold for R; share:S the top S of the neurons in every layer; dense every neuron.
 * <pre>
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
                    args.length > 4 ? Integer.parseInt(args[4]) : Integer.MAX_VALUE,
                    (args.length > 5 ? args[5] : "0").split(","));
            case "union" -> union(Path.of(args[1]), Path.of(args[2]), Path.of(args[3]));
            case "oracle" -> oracle(Path.of(args[1]), Path.of(args[2]), Double.parseDouble(args[3]), args[4],
                    args.length > 5 ? Integer.parseInt(args[5]) : Integer.MAX_VALUE,
                    args.length > 6 ? args[6] : "output");
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
            engine.attachPredictors(mlpRule(Predictors.read(predictorDir, model.config()), predictorDir, recall));
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
            int[] everyHead = new int[c.numHiddenLayers()];
            Arrays.fill(everyHead, c.numAttentionHeads());
            ForwardProbe oracle = new OracleProbe(c, (int) Math.round(mlpKeep * c.ffnDim()), everyHead, null);
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
            int[] heads = perLayer(headsKeep, layers);
            Predictors chosen = mlpRule(p, predictorDir, recall).withOperatingPoint(null, heads);
            engine.attachPredictors(chosen);
            int[] ids = Tokenizer.load(modelDir).encode(Files.readString(text));
            if (ids.length > maxTokens) ids = Arrays.copyOf(ids, maxTokens);
            PerplexityEvaluator.Result r = new PerplexityEvaluator(engine, PerplexityEvaluator.DEFAULT_WINDOW, true)
                    .evaluate(ids, (d, w, t, s) -> { });
            Map<String, Object> line = new LinkedHashMap<>();
            line.put("tokens", r.tokens());
            line.put("perplexity", r.perplexity());
            line.put("recall", recall);
            line.put("mlp_k", chosen.layers().stream().mapToInt(x -> x.mlpByThreshold() ? -1 : x.mlpK()).toArray());
            line.put("heads_keep", headsKeep);
            line.put("mlp_skipped", engine.sparsityStats().mlpSkipped());
            line.put("heads_skipped", engine.sparsityStats().headsSkipped());
            System.out.println(JSON.writeValueAsString(line));
        }
    }

    /** The predictors with the MLP rule {@code rule} (see the class comment) in every layer. */
    private static Predictors mlpRule(Predictors p, Path predictorDir, String rule) throws IOException {
        if (rule.equals("0")) return p;
        int layers = p.layers().size(), ffn = p.layers().getFirst().mlp().out();
        int[] mlpK = new int[layers];
        if (rule.equals("dense")) {
            Arrays.fill(mlpK, ffn);
            return p.withOperatingPoint(mlpK, null);
        }
        if (rule.startsWith("share:")) {
            Arrays.fill(mlpK, (int) Math.round(Double.parseDouble(rule.substring(6)) * ffn));
            return p.withOperatingPoint(mlpK, null);
        }
        JsonNode settings = JSON.readTree(Files.readString(predictorDir.resolve(Predictors.SETTINGS))).get("layers");
        if (rule.startsWith("threshold:")) {
            List<Predictors.Layer> out = new ArrayList<>();
            for (int l = 0; l < layers; l++) {
                Predictors.Layer x = p.layers().get(l);
                float threshold = (float) settings.get(l).get("stats").get("mlp_threshold_by_recall")
                        .get(rule.substring(10)).get("threshold").asDouble();
                out.add(new Predictors.Layer(x.mlp(), x.heads(), x.mlpK(), threshold, x.headsKeep(), x.stats()));
            }
            return new Predictors(p.rank(), p.mlpInput(), p.headsInput(), out);
        }
        for (int l = 0; l < layers; l++) {
            mlpK[l] = settings.get(l).get("stats").get("mlp_k_by_recall").get(rule).asInt();
        }
        return p.withOperatingPoint(mlpK, null);
    }

    /**
     * On a dense pass over the text: per layer, the share of truly active neurons (fc1 output > 0) that the MLP
     * predictor's selection (from the MLP block's input) holds, and the share it selects, for each MLP rule.
     */
    private static void recall(Path modelDir, Path predictorDir, Path text, int maxTokens, String[] rules)
            throws IOException {
        try (OptModel model = OptModel.load(modelDir); CpuEngine engine = new CpuEngine(model)) {
            OptConfig c = model.config();
            Predictors read = Predictors.read(predictorDir, c);
            if (read.mlpInput() != PredictorInput.MLP) {
                throw new IllegalArgumentException("this measurement reads the MLP block input only");
            }
            int layers = c.numHiddenLayers(), ffn = c.ffnDim(), hidden = c.hiddenSize(), n = rules.length;
            Predictors[] ps = new Predictors[n];
            for (int r = 0; r < n; r++) ps[r] = mlpRule(read, predictorDir, rules[r]);
            long[] active = new long[layers], rows = new long[layers];
            long[][] hits = new long[n][layers], selected = new long[n][layers];
            ForwardProbe probe = new ForwardProbe() {
                boolean[][][] chosen;

                @Override
                public void mlpInput(int layer, float[] h, int tokens) {
                    chosen = new boolean[n][tokens][ffn];
                    float[] z = new float[hidden], u = new float[read.rank()], scores = new float[ffn], tmp = new float[ffn];
                    int[] set = new int[ffn];
                    for (int t = 0; t < tokens; t++) {
                        LowRankPredictor.standardize(h, t * hidden, z, 0, hidden);
                        read.layers().get(layer).mlp().scores(z, 0, u, scores, 0);
                        for (int r = 0; r < n; r++) {
                            Predictors.Layer x = ps[r].layers().get(layer);
                            if (x.mlpByThreshold()) {
                                for (int j = 0; j < ffn; j++) chosen[r][t][j] = scores[j] >= x.mlpThreshold();
                            } else {
                                int count = TopK.select(scores, 0, ffn, x.mlpK(), set, tmp);
                                for (int i = 0; i < count; i++) chosen[r][t][set[i]] = true;
                            }
                        }
                    }
                }

                @Override
                public void mlpActivations(int layer, float[] f, int tokens) {
                    for (int t = 0; t < tokens; t++) {
                        for (int j = 0; j < ffn; j++) {
                            boolean on = f[t * ffn + j] > 0;
                            if (on) active[layer]++;
                            for (int r = 0; r < n; r++) {
                                if (on && chosen[r][t][j]) hits[r][layer]++;
                                if (chosen[r][t][j]) selected[r][layer]++;
                            }
                        }
                    }
                    rows[layer] += tokens;
                }
            };
            int[] ids = Tokenizer.load(modelDir).encode(Files.readString(text));
            if (ids.length > maxTokens) ids = Arrays.copyOf(ids, maxTokens);
            new PerplexityEvaluator(new ProbedEngine(engine, probe)).evaluate(ids, (d, w, t, s) -> { });
            for (int r = 0; r < n; r++) {
                double[] recall = new double[layers], kept = new double[layers];
                double keptSum = 0;
                for (int l = 0; l < layers; l++) {
                    recall[l] = (double) hits[r][l] / active[l];
                    kept[l] = (double) selected[r][l] / (rows[l] * ffn);
                    keptSum += kept[l];
                }
                Map<String, Object> line = new LinkedHashMap<>();
                line.put("tokens", ids.length);
                line.put("rule", rules[r]);
                line.put("recall_by_layer", recall);
                line.put("kept_by_layer", kept);
                line.put("mlp_skipped", 1 - keptSum / layers);
                System.out.println(JSON.writeValueAsString(line));
            }
        }
    }

    /** "N" for every layer, or one value per layer: "a,b,...". */
    private static int[] perLayer(String values, int layers) {
        String[] parts = values.split(",");
        if (parts.length != 1 && parts.length != layers) {
            throw new IllegalArgumentException("expected one value or " + layers + ", got " + values);
        }
        int[] out = new int[layers];
        for (int l = 0; l < layers; l++) out[l] = Integer.parseInt(parts[parts.length == 1 ? 0 : l].strip());
        return out;
    }

    /**
     * Perplexity when each token keeps exactly its top share of fc1 outputs and its top heads by output norm
     * ({@code headsBy} "output") or by contribution ("contribution", {@link HeadContributions}).
     */
    private static void oracle(Path modelDir, Path text, double mlpKeep, String headsKeep, int maxTokens,
                               String headsBy) throws IOException {
        if (!headsBy.equals("output") && !headsBy.equals("contribution")) {
            throw new IllegalArgumentException("heads are ranked by output or contribution, not " + headsBy);
        }
        try (OptModel model = OptModel.load(modelDir); CpuEngine engine = new CpuEngine(model)) {
            OptConfig c = model.config();
            int[] ids = Tokenizer.load(modelDir).encode(Files.readString(text));
            if (ids.length > maxTokens) ids = Arrays.copyOf(ids, maxTokens);
            int k = (int) Math.round(mlpKeep * c.ffnDim());
            ForwardProbe probe = new OracleProbe(c, k, perLayer(headsKeep, c.numHiddenLayers()),
                    headsBy.equals("contribution") ? new HeadContributions(model) : null);
            Engine probed = new ProbedEngine(engine, probe);
            PerplexityEvaluator.Result r = new PerplexityEvaluator(probed).evaluate(ids, (d, w, t, s) -> { });
            Map<String, Object> line = new LinkedHashMap<>();
            line.put("tokens", r.tokens());
            line.put("perplexity", r.perplexity());
            line.put("mlp_keep", mlpKeep);
            line.put("heads_keep", headsKeep);
            line.put("heads_by", headsBy);
            System.out.println(JSON.writeValueAsString(line));
        }
    }

    /**
     * Keeps, per token, the k largest fc1 outputs and a layer's headsKeep heads of largest output norm, or of largest
     * contribution where {@code contributions} is given.
     */
    private record OracleProbe(OptConfig c, int k, int[] headsKeep, HeadContributions contributions)
            implements ForwardProbe {
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
            if (headsKeep[layer] >= heads) return;
            float[] norms = new float[heads], scratch = new float[heads];
            int[] chosen = new int[heads];
            for (int t = 0; t < rows; t++) {
                if (contributions != null) {
                    contributions.of(layer, a, t * hidden, norms, 0);
                } else {
                    for (int h = 0; h < heads; h++) {
                        double sum = 0;
                        for (int i = 0; i < dim; i++) sum += a[t * hidden + h * dim + i] * a[t * hidden + h * dim + i];
                        norms[h] = (float) Math.sqrt(sum);
                    }
                }
                int count = TopK.select(norms, 0, heads, headsKeep[layer], chosen, scratch);
                boolean[] keep = new boolean[heads];
                for (int i = 0; i < count; i++) keep[chosen[i]] = true;
                for (int h = 0; h < heads; h++) {
                    if (!keep[h]) Arrays.fill(a, t * hidden + h * dim, t * hidden + (h + 1) * dim, 0f);
                }
            }
        }
    }

    /**
     * The CPU engine with a probe on every forward pass, for evaluators that see only {@link Engine}; the caller
     * closes the engine.
     */
    private static final class ProbedEngine extends ForwardingEngine {
        private final CpuEngine cpu;
        private final ForwardProbe probe;

        ProbedEngine(CpuEngine cpu, ForwardProbe probe) {
            super(cpu);
            this.cpu = cpu;
            this.probe = probe;
        }

        @Override
        public List<float[][]> forward(List<Step> steps) {
            return cpu.forward(steps, probe);
        }

        @Override
        public void close() {
        }
    }
}
