package io.dejavu.generation;

import io.dejavu.sampling.TokenLogprob;

import java.util.List;

/**
 * What one generation step produced.
 *
 * @param tokenId     the sampled token
 * @param text        text that may be shown now (possibly empty: held back as a possible stop sequence, or an
 *                    incomplete UTF-8 character)
 * @param finish      why the generation ended with this token, or null while it goes on
 * @param logprob     the token's log-probability when logprobs were asked for, else NaN
 * @param topLogprobs the most probable alternatives when top_logprobs was asked for, else empty
 */
public record TokenOutput(int tokenId, String text, FinishReason finish, double logprob,
                          List<TokenLogprob> topLogprobs) {
    public TokenOutput {
        topLogprobs = List.copyOf(topLogprobs);
    }

    public boolean finished() {
        return finish != null;
    }
}
