package io.dejavu.generation;

import io.dejavu.engine.Engine;
import io.dejavu.engine.Sequence;
import io.dejavu.engine.Step;
import io.dejavu.tokenizer.Tokenizer;

import java.util.List;
import java.util.function.Consumer;

/**
 * Runs one generation to its end on an engine, alone: prefill the prompt, then one decode step per token through
 * the KV cache. The CLI uses it; the server's scheduler batches many {@link Generation}s instead.
 */
public final class Generator {
    private final Engine engine;
    private final Tokenizer tokenizer;

    public Generator(Engine engine, Tokenizer tokenizer) {
        this.engine = engine;
        this.tokenizer = tokenizer;
    }

    /**
     * Generates from the prompt (OPT's leading id 2 included by the caller), handing each token's output to
     * onToken as it is produced. max_tokens is capped so that prompt and output fit the model's context.
     *
     * @return the finished generation (its text, token count and finish reason)
     */
    public Generation generate(int[] promptIds, GenerationParams params, Consumer<TokenOutput> onToken) {
        int context = engine.config().maxPositionEmbeddings();
        if (promptIds.length >= context) {
            throw new IllegalArgumentException("the prompt has " + promptIds.length + " tokens; the model's context of "
                    + context + " positions leaves no room to generate");
        }
        GenerationParams fitted = params.withMaxTokens(Math.min(params.maxTokens(), context - promptIds.length));
        Generation generation = new Generation(promptIds, fitted, tokenizer, engine.config().eosTokenId());
        try (Sequence sequence = engine.newSequence()) {
            int[] tokens = promptIds;
            while (true) {
                float[][] logits = engine.forward(List.of(Step.last(sequence, tokens))).getFirst();
                TokenOutput output = generation.next(logits[logits.length - 1]);
                onToken.accept(output);
                if (output.finished()) return generation;
                tokens = new int[]{output.tokenId()};
            }
        }
    }
}
