package io.dejavu.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.dejavu.engine.cpu.CpuEngine;
import io.dejavu.eval.PerplexityEvaluator;
import io.dejavu.model.OptConfig;
import io.dejavu.model.OptModel;
import io.dejavu.sparsity.Predictors;
import io.dejavu.tokenizer.Tokenizer;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.Callable;

/** Dense perplexity of a text file, windowed as the golden figures are (see {@link PerplexityEvaluator}). */
@Command(name = "eval", mixinStandardHelpOptions = true,
        description = "Perplexity of a text file: windows of 511 tokens, each after the BOS id, no overlap.")
public final class EvalCommand implements Callable<Integer> {
    private static final long PROGRESS_INTERVAL_NANOS = 5_000_000_000L;

    @Mixin
    ModelOption model;
    @Spec
    CommandSpec spec;
    @Option(names = "--text", required = true, paramLabel = "FILE", description = "UTF-8 text to evaluate.")
    Path text;
    @Option(names = "--json", description = "End with one JSON line: {\"tokens\":N,\"nll_per_token\":X,\"perplexity\":Y} "
            + "(with --sparse also \"mlp_skipped\":S,\"heads_skipped\":H).")
    boolean json;
    @Option(names = "--window", paramLabel = "N", description = "Window length including the BOS id (default: ${DEFAULT-VALUE}).")
    int window = PerplexityEvaluator.DEFAULT_WINDOW;
    @Option(names = "--threads", paramLabel = "N", description = "CPU threads (default: all available processors).")
    Integer threads;
    @Option(names = "--sparse", description = "Run with Deja Vu contextual sparsity: each token executes only the MLP "
            + "neurons and heads its predictors select; the JSON line adds mlp_skipped and heads_skipped.")
    boolean sparse;
    @Option(names = "--predictors", paramLabel = "DIR",
            description = "Predictors written by `dejavu calibrate` (default: MODEL_DIR/dejavu).")
    Path predictors;
    @Option(names = "--mlp-k", paramLabel = "K[,K...]", split = ",",
            description = "With --sparse: a top-k of MLP neurons, one for all layers or one per layer, instead of the "
                    + "calibrated operating point.")
    int[] mlpK;
    @Option(names = "--heads-keep", paramLabel = "N[,N...]", split = ",",
            description = "With --sparse: attention heads kept per token, one for all layers or one per layer.")
    int[] headsKeep;

    @Override
    public Integer call() throws IOException {
        if (!sparse && (predictors != null || mlpK != null || headsKeep != null)) {
            throw new IllegalArgumentException("--predictors, --mlp-k and --heads-keep need --sparse");
        }
        String content = readText();
        Path dir = model.directory();
        Tokenizer tokenizer = Tokenizer.load(dir);
        int[] ids = tokenizer.encode(content);
        if (ids.length == 0) throw new IllegalArgumentException("--text " + text + " has no tokens");
        PrintWriter err = spec.commandLine().getErr();
        try (OptModel opt = OptModel.load(dir);
             CpuEngine engine = threads == null ? new CpuEngine(opt) : new CpuEngine(opt, threads)) {
            if (sparse) engine.attachPredictors(sparsePredictors(opt.config(), dir));
            err.printf("eval: %d tokens of %s with %s%s%n", ids.length, text.getFileName(), dir.getFileName(),
                    sparse ? " (sparse)" : "");
            long start = System.nanoTime();
            long[] lastReport = {start};
            PerplexityEvaluator.Result result = new PerplexityEvaluator(engine, window, sparse).evaluate(ids,
                    (done, windows, tokens, nllSum) -> {
                        long now = System.nanoTime();
                        if (done < windows && now - lastReport[0] < PROGRESS_INTERVAL_NANOS) return;
                        lastReport[0] = now;
                        double elapsed = (now - start) / 1e9, eta = elapsed * (ids.length - tokens) / tokens;
                        err.printf("eval: window %d/%d, %d tokens, perplexity so far %.2f, %.0f tokens/s, ETA %s%n",
                                done, windows, tokens, Math.exp(nllSum / tokens), tokens / elapsed, duration(eta));
                        err.flush();
                    });
            double seconds = (System.nanoTime() - start) / 1e9;
            PrintWriter out = spec.commandLine().getOut();
            if (json) {
                Map<String, Object> line = new LinkedHashMap<>();
                line.put("tokens", result.tokens());
                line.put("nll_per_token", result.nllPerToken());
                line.put("perplexity", result.perplexity());
                if (sparse) {
                    line.put("mlp_skipped", engine.sparsityStats().mlpSkipped());
                    line.put("heads_skipped", engine.sparsityStats().headsSkipped());
                }
                out.println(new ObjectMapper().writeValueAsString(line));
            } else {
                out.printf("tokens         %d%nnll per token  %.6f%nperplexity     %.4f%ntime           %.1f s%n",
                        result.tokens(), result.nllPerToken(), result.perplexity(), seconds);
                if (sparse) {
                    out.printf("mlp skipped    %.4f%nheads skipped  %.4f%n", engine.sparsityStats().mlpSkipped(),
                            engine.sparsityStats().headsSkipped());
                }
            }
            out.flush();
        }
        return 0;
    }

    /** The calibrated predictors, at the operating point the options override. */
    private Predictors sparsePredictors(OptConfig config, Path modelDir) {
        Predictors p = Predictors.read(predictors != null ? predictors : modelDir.resolve(Predictors.MODEL_SUBDIRECTORY), config);
        int layers = config.numHiddenLayers();
        return p.withOperatingPoint(Predictors.perLayer("--mlp-k", mlpK, layers, config.ffnDim()),
                Predictors.perLayer("--heads-keep", headsKeep, layers, config.numAttentionHeads()));
    }

    private String readText() {
        try {
            return Files.readString(text);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read --text " + text + ": " + e.getMessage(), e);
        }
    }

    private static String duration(double seconds) {
        long s = Math.round(seconds);
        return s >= 60 ? (s / 60) + "m" + String.format("%02d", s % 60) + "s" : s + "s";
    }
}
