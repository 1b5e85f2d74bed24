package io.dejavu.api;

import io.dejavu.model.OptConfig;
import io.vertx.core.json.JsonObject;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.stream.Stream;

/**
 * What GET /v1/models/{id} tells about the served model beyond OpenAI's model object: its shape, size, engine and
 * whether contextual-sparsity predictors were calibrated for it. The browser playground shows it as the model card.
 */
final class ModelCard {
    private ModelCard() {
    }

    static JsonObject of(ApiContext api) {
        OptConfig c = api.modelConfig();
        Path dir = api.config().model();
        return new JsonObject()
                .put("name", api.modelName())
                .put("parameters", parameters(c))
                .put("weights_bytes", weightsBytes(dir))
                .put("layers", c.numHiddenLayers())
                .put("heads", c.numAttentionHeads())
                .put("hidden_size", c.hiddenSize())
                .put("neurons", c.ffnDim())
                .put("vocab_size", c.vocabSize())
                .put("context", c.maxPositionEmbeddings())
                .put("backend", api.engineStatus().get().backend())
                .put("sparsity", sparsity(api))
                .put("predictors_calibrated", api.sparseAvailable().getAsBoolean())
                .put("max_prompt_tokens", Math.min(api.config().maxPromptTokens(), c.maxPositionEmbeddings() - 1))
                .put("max_output_tokens", api.config().maxOutputTokens());
    }

    /** What sparsity a request gets: "dense only", or sparse on request or by default. */
    private static String sparsity(ApiContext api) {
        if (!api.sparseAvailable().getAsBoolean()) return "dense only";
        return api.config().sparseDefault() ? "sparse by default" : "dense by default, sparse on request";
    }

    /** The parameter count of transformers' OPTForCausalLM with this config (the LM head tied or not). */
    static long parameters(OptConfig c) {
        long h = c.hiddenSize();
        long embed = (long) c.vocabSize() * c.wordEmbedProjDim() + (c.maxPositionEmbeddings() + OptConfig.POSITION_OFFSET) * h;
        long bias = c.enableBias() ? 1 : 0;
        long norm = c.layerNormElementwiseAffine() ? 2 * h : 0;
        long attention = 4 * (h * h + bias * h);
        long mlp = 2 * h * c.ffnDim() + bias * (c.ffnDim() + h);
        long layers = c.numHiddenLayers() * (attention + mlp + 2 * norm);
        long projections = c.hasProjections() ? 2 * h * c.wordEmbedProjDim() : 0;
        long head = c.tieWordEmbeddings() ? 0 : (long) c.vocabSize() * c.wordEmbedProjDim();
        return embed + layers + (c.hasFinalLayerNorm() ? norm : 0) + projections + head;
    }

    private static long weightsBytes(Path dir) {
        try (Stream<Path> files = Files.list(dir)) {
            return files.filter(f -> f.getFileName().toString().endsWith(".safetensors") || f.getFileName().toString().endsWith(".bin"))
                    .mapToLong(f -> {
                        try {
                            return Files.size(f);
                        } catch (IOException e) {
                            throw new UncheckedIOException(e);
                        }
                    }).sum();
        } catch (IOException | UncheckedIOException e) {
            return -1;
        }
    }
}
