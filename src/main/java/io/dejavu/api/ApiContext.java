package io.dejavu.api;

import io.dejavu.config.ServiceConfig;
import io.dejavu.metrics.ServiceMetrics;
import io.dejavu.model.OptConfig;
import io.dejavu.tokenizer.Tokenizer;

import java.util.function.BooleanSupplier;
import java.util.function.Supplier;

/**
 * What the HTTP/WebSocket verticles share, all thread-safe: settings, the tokenizer (prompts are tokenized on the
 * event loops, off the engine thread), the model's id and shape, metrics and the engine's status.
 *
 * @param modelName       the id /v1/models lists and requests may name: the model directory's name
 * @param sparseAvailable whether the engine has sparsity predictors, so that requests may ask for "sparse": true
 */
public record ApiContext(ServiceConfig config, Tokenizer tokenizer, OptConfig modelConfig, String modelName,
                         ServiceMetrics metrics, Supplier<EngineStatus> engineStatus,
                         BooleanSupplier sparseAvailable) {
}
