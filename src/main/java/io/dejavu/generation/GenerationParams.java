package io.dejavu.generation;

import io.dejavu.sampling.SamplingParams;

import java.util.List;
import java.util.Objects;

/**
 * One request's generation settings, as the OpenAI API names them.
 *
 * @param maxTokens   most tokens to generate (the end-of-sequence token counts); >= 1
 * @param stop        up to 4 non-empty strings that end the generation; the text from a stop string on is not returned
 * @param sampling    how each token is chosen
 * @param logprobs    report each chosen token's log-probability
 * @param topLogprobs with logprobs, also report this many most probable alternatives per token, 0..20
 */
public record GenerationParams(int maxTokens, List<String> stop, SamplingParams sampling, boolean logprobs,
                               int topLogprobs) {
    public static final int MAX_STOP_SEQUENCES = 4;
    public static final int MAX_TOP_LOGPROBS = 20;

    public GenerationParams {
        if (maxTokens < 1) throw new IllegalArgumentException("max_tokens = " + maxTokens + " must be >= 1");
        Objects.requireNonNull(stop, "stop");
        Objects.requireNonNull(sampling, "sampling");
        if (stop.size() > MAX_STOP_SEQUENCES) {
            throw new IllegalArgumentException("stop has " + stop.size() + " sequences; at most " + MAX_STOP_SEQUENCES
                    + " are allowed");
        }
        for (String s : stop) {
            if (s == null || s.isEmpty()) throw new IllegalArgumentException("stop sequences must be non-empty strings");
        }
        stop = List.copyOf(stop);
        if (topLogprobs < 0 || topLogprobs > MAX_TOP_LOGPROBS) {
            throw new IllegalArgumentException("top_logprobs = " + topLogprobs + " is out of range: must be [0, "
                    + MAX_TOP_LOGPROBS + "]");
        }
        if (topLogprobs > 0 && !logprobs) {
            throw new IllegalArgumentException("top_logprobs = " + topLogprobs + " needs logprobs = true");
        }
    }

    /** maxTokens tokens with these sampling settings, no stop sequences, no logprobs. */
    public static GenerationParams of(int maxTokens, SamplingParams sampling) {
        return new GenerationParams(maxTokens, List.of(), sampling, false, 0);
    }

    public GenerationParams withMaxTokens(int value) {
        return new GenerationParams(value, stop, sampling, logprobs, topLogprobs);
    }

    public GenerationParams withStop(List<String> value) {
        return new GenerationParams(maxTokens, value, sampling, logprobs, topLogprobs);
    }

    public GenerationParams withLogprobs(int top) {
        return new GenerationParams(maxTokens, stop, sampling, true, top);
    }
}
