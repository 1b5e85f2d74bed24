package io.dejavu.scheduler;

import io.dejavu.generation.GenerationParams;

/**
 * One generation to run: the API has tokenized and checked it.
 *
 * @param id        unique among the server's requests; the events about it carry it
 * @param promptIds the prompt as the model sees it, OPT's leading id 2 included
 * @param sparse    decode with contextual sparsity (the engine must have predictors); the prompt runs dense either way
 */
public record GenerationRequest(String id, int[] promptIds, GenerationParams params, boolean sparse) {
    /** A dense request. */
    public GenerationRequest(String id, int[] promptIds, GenerationParams params) {
        this(id, promptIds, params, false);
    }
}
