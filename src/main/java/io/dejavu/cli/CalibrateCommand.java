package io.dejavu.cli;

import io.dejavu.model.OptModel;
import io.dejavu.sparsity.Calibrator;
import io.dejavu.sparsity.PredictorInput;
import io.dejavu.sparsity.Predictors;
import io.dejavu.tokenizer.Tokenizer;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.concurrent.Callable;

/** Trains the Deja Vu sparsity predictors of a model on a calibration text and writes them next to it. */
@Command(name = "calibrate", mixinStandardHelpOptions = true,
        description = "Run the dense model over a calibration text, train the contextual-sparsity predictors "
                + "(MLP neurons and attention heads, one pair per layer) and choose the operating point.")
public final class CalibrateCommand implements Callable<Integer> {
    @Mixin
    ModelOption model;
    @Option(names = "--text", required = true, paramLabel = "FILE", description = "Calibration text (UTF-8).")
    Path text;
    @Option(names = "--out", paramLabel = "DIR", description = "Where to write the predictors (default: MODEL_DIR/dejavu).")
    Path out;
    @Option(names = "--rank", paramLabel = "R", description = "Predictor width r (default: half the hidden size, a multiple of 8, at most 512).")
    int rank;
    @Option(names = "--epochs", paramLabel = "N", description = "Training epochs per predictor (default: ${DEFAULT-VALUE}).")
    int epochs = Calibrator.Options.defaults().epochs();
    @Option(names = "--recall", paramLabel = "R",
            description = "MLP recall of active neurons each layer's top-k must reach on held-out text (default: ${DEFAULT-VALUE}).")
    double recall = Calibrator.Options.defaults().recallTarget();
    @Option(names = "--max-tokens", paramLabel = "N", description = "Use at most N tokens of the text (default: ${DEFAULT-VALUE}).")
    int maxTokens = Calibrator.Options.defaults().maxTokens();
    @Option(names = "--mlp-input", paramLabel = "INPUT",
            description = "What the MLP predictors read: lookahead (the previous layer's input), layer (the layer's "
                    + "input) or mlp (the MLP block's input, after attention) (default: ${DEFAULT-VALUE}).")
    String mlpInput = Calibrator.Options.defaults().mlpInput().wireName;
    @Option(names = "--compare-inputs",
            description = "Also train MLP predictors on the other inputs (and head predictors on the layer's input), "
                    + "to report their recall next to the chosen one.")
    boolean compareInputs;

    @Option(names = "--top-k-only", description = "Select MLP neurons by a per-layer top-k only, never by a score threshold.")
    boolean topKOnly;

    @Override
    public Integer call() throws IOException {
        if (rank < 0) throw new IllegalArgumentException("--rank must be positive, was " + rank);
        if (epochs < 1) throw new IllegalArgumentException("--epochs must be at least 1, was " + epochs);
        if (!(recall > 0 && recall <= 1)) throw new IllegalArgumentException("--recall must be in (0, 1], was " + recall);
        if (maxTokens < 1) throw new IllegalArgumentException("--max-tokens must be positive, was " + maxTokens);
        String content;
        try {
            content = Files.readString(text);
        } catch (NoSuchFileException e) {
            throw new IllegalArgumentException("--text " + text + ": file not found");
        } catch (IOException e) {
            throw new UncheckedIOException("--text " + text + ": cannot read: " + e.getMessage(), e);
        }
        Path dir = model.directory();
        Path target = out != null ? out : dir.resolve(Predictors.MODEL_SUBDIRECTORY);
        Calibrator.Options d = Calibrator.Options.defaults();
        Calibrator.Options options = new Calibrator.Options(rank, epochs, d.learningRate(), d.batchSize(), recall,
                maxTokens, PredictorInput.of(mlpInput), compareInputs, !topKOnly, d.threads());
        try (OptModel opt = OptModel.load(dir)) {
            int[] ids = Tokenizer.load(dir).encode(content);
            Calibrator.Outcome outcome = new Calibrator(System.err).run(opt, ids, options);
            try {
                outcome.predictors().write(target, opt.config(), outcome.summary());
            } catch (IOException e) {
                throw new UncheckedIOException("cannot write the predictors to " + target + ": " + e, e);
            }
            System.err.println("wrote " + target.resolve(Predictors.WEIGHTS) + " and " + target.resolve(Predictors.SETTINGS));
            for (int l = 0; l < outcome.predictors().layers().size(); l++) {
                Predictors.Layer layer = outcome.predictors().layers().get(l);
                System.err.printf("layer %d: %s%n", l, layer.stats().entrySet().stream()
                        .map(e -> e.getKey() + "=" + (e.getValue() instanceof double[] values ? java.util.Arrays.toString(values) : e.getValue()))
                        .toList());
            }
        }
        return 0;
    }
}
