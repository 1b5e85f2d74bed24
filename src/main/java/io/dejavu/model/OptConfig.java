package io.dejavu.model;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;

/**
 * The fields of a Hugging Face OPT config.json that change the math, with the defaults of transformers' OPTConfig.
 *
 * @param wordEmbedProjDim       width of the token embedding; when it differs from hiddenSize, project_in and
 *                               project_out map between the two (opt-350m)
 * @param doLayerNormBefore      pre-LayerNorm (most OPT sizes) or post-LayerNorm (opt-350m)
 * @param removeFinalLayerNorm   the config's _remove_final_layer_norm
 */
public record OptConfig(
        int hiddenSize,
        int numHiddenLayers,
        int numAttentionHeads,
        int ffnDim,
        int vocabSize,
        int maxPositionEmbeddings,
        int wordEmbedProjDim,
        boolean doLayerNormBefore,
        boolean enableBias,
        boolean layerNormElementwiseAffine,
        boolean removeFinalLayerNorm,
        String activationFunction,
        boolean tieWordEmbeddings,
        int bosTokenId,
        int eosTokenId,
        int padTokenId) {

    public static final String SUPPORTED_MODEL_TYPES = "opt";
    /** transformers' OPT learned positional embedding skips the first two rows. */
    public static final int POSITION_OFFSET = 2;
    public static final float LAYER_NORM_EPS = 1e-5f;

    public int headDim() {
        return hiddenSize / numAttentionHeads;
    }

    /** The decoder ends with a LayerNorm only in pre-LN models that keep it (transformers' OPTDecoder). */
    public boolean hasFinalLayerNorm() {
        return doLayerNormBefore && !removeFinalLayerNorm;
    }

    public boolean hasProjections() {
        return wordEmbedProjDim != hiddenSize;
    }

    public static OptConfig read(Path modelDir) {
        Path file = modelDir.resolve("config.json");
        JsonNode root;
        try {
            root = new ObjectMapper().readTree(Files.readString(file));
        } catch (NoSuchFileException e) {
            throw new ModelLoadException(file, "missing: a model directory needs config.json");
        } catch (IOException e) {
            throw new ModelLoadException(file, "not valid JSON: " + e.getMessage());
        }
        if (root == null || !root.isObject()) throw new ModelLoadException(file, "expected a JSON object");
        String modelType = root.path("model_type").asText("");
        if (!modelType.equals("opt")) {
            throw new ModelLoadException(file, "unsupported model_type '" + modelType + "'; supported: " + SUPPORTED_MODEL_TYPES);
        }
        int hidden = positiveInt(root, file, "hidden_size");
        int heads = positiveInt(root, file, "num_attention_heads");
        if (hidden % heads != 0) {
            throw new ModelLoadException(file, "hidden_size " + hidden + " is not divisible by num_attention_heads " + heads);
        }
        String activation = root.path("activation_function").asText("relu");
        if (!activation.equals("relu") && !activation.equals("gelu")) {
            throw new ModelLoadException(file, "unsupported activation_function '" + activation + "'; supported: relu, gelu");
        }
        return new OptConfig(
                hidden,
                positiveInt(root, file, "num_hidden_layers"),
                heads,
                positiveInt(root, file, "ffn_dim"),
                positiveInt(root, file, "vocab_size"),
                positiveInt(root, file, "max_position_embeddings"),
                root.has("word_embed_proj_dim") && !root.get("word_embed_proj_dim").isNull()
                        ? positiveInt(root, file, "word_embed_proj_dim") : hidden,
                root.path("do_layer_norm_before").asBoolean(true),
                root.path("enable_bias").asBoolean(true),
                root.path("layer_norm_elementwise_affine").asBoolean(true),
                root.path("_remove_final_layer_norm").asBoolean(false),
                activation,
                root.path("tie_word_embeddings").asBoolean(true),
                root.path("bos_token_id").asInt(2),
                root.path("eos_token_id").asInt(2),
                root.path("pad_token_id").asInt(1));
    }

    private static int positiveInt(JsonNode root, Path file, String field) {
        JsonNode node = root.get(field);
        if (node == null || !node.canConvertToInt() || node.asInt() <= 0) {
            throw new ModelLoadException(file, "field " + field + " must be a positive integer, found " + node);
        }
        return node.asInt();
    }
}
