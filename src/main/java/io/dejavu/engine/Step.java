package io.dejavu.engine;

/**
 * One sequence's part of a forward pass: the tokens to append to it (a whole prompt, a chunk of one, or the one
 * token of a decode step).
 *
 * @param allLogits return the logits of every appended token rather than only of the last (perplexity)
 * @param sparse    execute only the MLP neurons and attention heads that the engine's sparsity predictors select
 *                  for these tokens (Deja Vu); dense when false. Chosen per step, so dense and sparse requests
 *                  share one engine and one batch.
 */
public record Step(Sequence sequence, int[] tokens, boolean allLogits, boolean sparse) {
    public Step {
        if (tokens.length == 0) throw new IllegalArgumentException("a step appends at least one token");
    }

    public Step(Sequence sequence, int[] tokens, boolean allLogits) {
        this(sequence, tokens, allLogits, false);
    }

    public Step withSparse(boolean sparse) {
        return new Step(sequence, tokens, allLogits, sparse);
    }

    public static Step last(Sequence sequence, int... tokens) {
        return new Step(sequence, tokens, false);
    }
}
