package io.dejavu.sampling;

import java.util.List;

/**
 * A sampled token with the log-probabilities the API's logprobs report: the model's own distribution (log-softmax of
 * the raw logits over the sampleable vocabulary, before penalties, temperature and filters), as vLLM reports by default.
 *
 * @param top the most probable tokens, most probable first (ties to the lowest id)
 */
public record SampleResult(int token, double logprob, List<TokenLogprob> top) {
    public SampleResult {
        top = List.copyOf(top);
    }
}
