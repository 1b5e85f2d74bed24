package io.dejavu.scheduler;

import io.dejavu.generation.FinishReason;
import io.dejavu.sampling.TokenLogprob;

import java.util.List;

/** What the scheduler reports about a request as it runs: one {@link Token} per generated token, then one {@link Finish}. */
public sealed interface GenerationEvent {
    String requestId();

    /**
     * A generated token.
     *
     * @param index         0 for the request's first token, then 1, 2, ...
     * @param text          text that may be shown now; empty while held back (a possible stop sequence or an
     *                      incomplete UTF-8 character)
     * @param logprob       the token's log-probability when asked for, else NaN
     * @param mlpSkipped    per layer, the share of MLP (FFN) neurons skipped in the step that made this token;
     *                      null when the token was computed densely (a dense request, or a sparse request's prompt)
     * @param headsSkipped  per layer, the share of attention heads skipped in that step; null as mlpSkipped
     * @param stepNanos     duration of the engine step that produced it (the whole batch)
     * @param batchSize     sequences in that step
     * @param elapsedNanos  time since the scheduler received the request
     */
    record Token(String requestId, int index, int tokenId, String text, double logprob, List<TokenLogprob> topLogprobs,
                 double[] mlpSkipped, double[] headsSkipped, long stepNanos, int batchSize, long elapsedNanos) implements GenerationEvent {
    }

    /**
     * The request's end.
     *
     * @param error                 what went wrong when reason is ERROR, else null
     * @param timeToFirstTokenNanos -1 when no token was generated
     */
    record Finish(String requestId, FinishReason reason, int promptTokens, int completionTokens, String error,
                  long timeToFirstTokenNanos, long elapsedNanos) implements GenerationEvent {
    }
}
