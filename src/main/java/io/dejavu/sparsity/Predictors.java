package io.dejavu.sparsity;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.dejavu.model.ModelLoadException;
import io.dejavu.model.OptConfig;
import io.dejavu.model.SafetensorsFile;
import io.dejavu.model.SafetensorsWriter;
import io.dejavu.model.Tensor;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * A model's sparsity predictors and operating point: per layer the MLP-neuron and attention-head predictors and how
 * many of each to execute. Stored as {@value #WEIGHTS} (the predictor weights) next to {@value #SETTINGS} (shapes,
 * operating point, the recall measured at calibration).
 *
 * @param mlpInput   what the MLP predictors read
 * @param headsInput what the head predictors read (not {@link PredictorInput#MLP}: heads run before the MLP)
 */
public record Predictors(int rank, PredictorInput mlpInput, PredictorInput headsInput, List<Layer> layers) {
    public Predictors {
        if (headsInput == PredictorInput.MLP) throw new IllegalArgumentException("head predictors cannot read the MLP input");
    }

    public static final String WEIGHTS = "predictors.safetensors";
    public static final String SETTINGS = "predictors.json";
    /** The folder inside a model directory where `dejavu calibrate` writes, and where eval and serve look, by default. */
    public static final String MODEL_SUBDIRECTORY = "dejavu";
    static final String FORMAT = "dejavu-predictors/1";

    /**
     * @param mlpK      neurons executed per token (top-k of the MLP predictor's scores) when mlpThreshold is NaN
     * @param mlpThreshold when a number: execute the neurons whose score is at least this (a count that varies
     *                  with the token) instead of a top-k
     * @param headsKeep heads executed per token (top-k of the head predictor's scores); all heads: dense attention
     * @param stats     what calibration measured for this layer, written to the JSON as is
     */
    public record Layer(LowRankPredictor mlp, LowRankPredictor heads, int mlpK, float mlpThreshold, int headsKeep,
                        Map<String, Object> stats) {
        public boolean mlpByThreshold() {
            return !Float.isNaN(mlpThreshold);
        }
    }

    /**
     * The same predictors at another operating point: a top-k per layer for the MLP (null keeps the current rule)
     * and heads kept per layer (null keeps the current).
     */
    public Predictors withOperatingPoint(int[] mlpK, int[] headsKeep) {
        List<Layer> out = new ArrayList<>();
        for (int l = 0; l < layers.size(); l++) {
            Layer x = layers.get(l);
            out.add(new Layer(x.mlp, x.heads,
                    mlpK == null ? x.mlpK : Math.clamp(mlpK[l], 0, x.mlp.out()),
                    mlpK == null ? x.mlpThreshold : Float.NaN,
                    headsKeep == null ? x.headsKeep : Math.clamp(headsKeep[l], 0, x.heads.out()), x.stats));
        }
        return new Predictors(rank, mlpInput, headsInput, out);
    }

    /**
     * An operating-point override for {@link #withOperatingPoint}: one value for every layer or one per layer, each
     * in [1, max]; null for none.
     *
     * @param name what the values are called where the user gave them, for the error message
     * @throws IllegalArgumentException naming {@code name} and the problem
     */
    public static int[] perLayer(String name, int[] values, int layers, int max) {
        if (values == null) return null;
        if (values.length != 1 && values.length != layers) {
            throw new IllegalArgumentException(name + " takes one value or one per layer (" + layers + "), got "
                    + values.length);
        }
        int[] out = new int[layers];
        for (int l = 0; l < layers; l++) {
            out[l] = values[values.length == 1 ? 0 : l];
            if (out[l] < 1 || out[l] > max) {
                throw new IllegalArgumentException(name + " values must be in [1, " + max + "], got " + out[l]);
            }
        }
        return out;
    }

    public void write(Path dir, OptConfig config, Map<String, Object> summary) throws IOException {
        List<SafetensorsWriter.Entry> tensors = new ArrayList<>();
        ObjectMapper json = new ObjectMapper();
        ObjectNode root = json.createObjectNode();
        root.put("format", FORMAT);
        ObjectNode model = root.putObject("model");
        model.put("hidden_size", config.hiddenSize());
        model.put("num_hidden_layers", config.numHiddenLayers());
        model.put("num_attention_heads", config.numAttentionHeads());
        model.put("ffn_dim", config.ffnDim());
        root.put("rank", rank);
        root.put("mlp_input", mlpInput.wireName);
        root.put("heads_input", headsInput.wireName);
        root.set("calibration", json.valueToTree(summary));
        ArrayNode layerNodes = root.putArray("layers");
        for (int l = 0; l < layers.size(); l++) {
            Layer x = layers.get(l);
            add(tensors, "layers." + l + ".mlp", x.mlp);
            add(tensors, "layers." + l + ".heads", x.heads);
            ObjectNode node = layerNodes.addObject();
            node.put("mlp_k", x.mlpK);
            if (x.mlpByThreshold()) node.put("mlp_threshold", x.mlpThreshold);
            else node.putNull("mlp_threshold");
            node.put("heads_keep", x.headsKeep);
            node.set("stats", json.valueToTree(x.stats));
        }
        Files.createDirectories(dir);
        SafetensorsWriter.write(dir.resolve(WEIGHTS), tensors);
        json.writerWithDefaultPrettyPrinter().writeValue(dir.resolve(SETTINGS).toFile(), root);
    }

    private static void add(List<SafetensorsWriter.Entry> tensors, String prefix, LowRankPredictor p) {
        tensors.add(new SafetensorsWriter.Entry(prefix + ".down", new long[]{p.rank(), p.in()}, p.down()));
        tensors.add(new SafetensorsWriter.Entry(prefix + ".up", new long[]{p.out(), p.rank()}, p.up()));
    }

    /** Reads the predictors in {@code dir} and checks them against the model they are for. */
    public static Predictors read(Path dir, OptConfig config) {
        Path settings = dir.resolve(SETTINGS);
        JsonNode root;
        try {
            root = new ObjectMapper().readTree(Files.readString(settings));
        } catch (NoSuchFileException e) {
            throw new ModelLoadException(settings, "missing: no predictors here (run `dejavu calibrate` first)");
        } catch (IOException e) {
            throw new ModelLoadException(settings, "not valid JSON: " + e.getMessage());
        }
        if (root == null || !FORMAT.equals(root.path("format").asText())) {
            throw new ModelLoadException(settings, "not a predictors file (expected \"format\": \"" + FORMAT + "\")");
        }
        JsonNode model = root.path("model");
        int hidden = config.hiddenSize(), layers = config.numHiddenLayers(), heads = config.numAttentionHeads(),
                ffn = config.ffnDim();
        if (model.path("hidden_size").asInt() != hidden || model.path("num_hidden_layers").asInt() != layers
                || model.path("num_attention_heads").asInt() != heads || model.path("ffn_dim").asInt() != ffn) {
            throw new ModelLoadException(settings, "predictors were calibrated for another model shape " + model
                    + " (this model: hidden " + hidden + ", layers " + layers + ", heads " + heads + ", ffn " + ffn + ")");
        }
        int rank = root.path("rank").asInt();
        JsonNode layerNodes = root.path("layers");
        if (rank < 1 || !layerNodes.isArray() || layerNodes.size() != layers) {
            throw new ModelLoadException(settings, "needs a positive \"rank\" and one entry per layer in \"layers\"");
        }
        Path weights = dir.resolve(WEIGHTS);
        List<Layer> out = new ArrayList<>();
        try (Arena arena = Arena.ofConfined()) {
            Map<String, Tensor> tensors = SafetensorsFile.read(weights, arena);
            for (int l = 0; l < layers; l++) {
                JsonNode node = layerNodes.get(l);
                LowRankPredictor mlp = predictor(weights, tensors, "layers." + l + ".mlp", hidden, rank, ffn);
                LowRankPredictor head = predictor(weights, tensors, "layers." + l + ".heads", hidden, rank, heads);
                int mlpK = node.path("mlp_k").asInt(-1), headsKeep = node.path("heads_keep").asInt(-1);
                if (mlpK < 0 || mlpK > ffn || headsKeep < 0 || headsKeep > heads) {
                    throw new ModelLoadException(settings, "layer " + l + ": mlp_k must be in [0, " + ffn
                            + "] and heads_keep in [0, " + heads + "]");
                }
                JsonNode threshold = node.path("mlp_threshold");
                out.add(new Layer(mlp, head, mlpK, threshold.isNumber() ? threshold.floatValue() : Float.NaN, headsKeep,
                        Map.of()));
            }
        }
        try {
            return new Predictors(rank, PredictorInput.of(root.path("mlp_input").asText()),
                    PredictorInput.of(root.path("heads_input").asText()), List.copyOf(out));
        } catch (IllegalArgumentException e) {
            throw new ModelLoadException(settings, e.getMessage());
        }
    }

    private static LowRankPredictor predictor(Path file, Map<String, Tensor> tensors, String prefix, int in, int rank,
                                              int out) {
        return new LowRankPredictor(in, rank, out, tensor(file, tensors, prefix + ".down", rank, in),
                tensor(file, tensors, prefix + ".up", out, rank));
    }

    private static float[] tensor(Path file, Map<String, Tensor> tensors, String name, long rows, long columns) {
        Tensor t = tensors.get(name);
        if (t == null) throw new ModelLoadException(file, "missing tensor " + name);
        if (t.shape().length != 2 || t.shape()[0] != rows || t.shape()[1] != columns) {
            throw new ModelLoadException(file, "tensor " + name + " has shape " + t.shapeString() + ", expected ["
                    + rows + ", " + columns + "]");
        }
        return t.toFloatArray();
    }
}
