package io.dejavu.engine;

import io.dejavu.model.OptConfig;

import java.util.ArrayList;
import java.util.List;
import java.util.Objects;

/**
 * Runs the OPT forward pass for a batch of sequences of different lengths. The CPU and CUDA backends implement it;
 * the scheduler and the CLI see only this. Not thread-safe: one thread owns an engine.
 */
public interface Engine extends AutoCloseable {
    OptConfig config();

    /** The backend's name as configuration spells it: "cpu" or "cuda". */
    String backend();

    /** A new empty sequence. */
    Sequence newSequence();

    /**
     * Appends each step's tokens to its sequence's KV cache in one batched pass and returns, per step in order, the
     * logits (config().vocabSize() wide) of its last token, or of all its tokens when the step asks.
     */
    List<float[][]> forward(List<Step> steps);

    /**
     * Positions one block of the KV cache holds, for an engine whose KV cache is a fixed pool of blocks (the CUDA
     * engine's, sized at start); 0 for one whose cache grows while memory lasts (the CPU engine's, on the Java heap).
     * A sequence of n positions holds ceil(n / kvCacheBlockTokens()) blocks.
     */
    default int kvCacheBlockTokens() {
        return 0;
    }

    /** Blocks in the KV cache's pool (where {@link #kvCacheBlockTokens()} is not 0). */
    default int kvCacheBlocks() {
        return Integer.MAX_VALUE;
    }

    /** Blocks of the pool that no open sequence holds (where {@link #kvCacheBlockTokens()} is not 0). */
    default int freeKvCacheBlocks() {
        return Integer.MAX_VALUE;
    }

    /** Whether steps may ask for sparse execution ({@link Step#sparse()}): sparsity predictors are in place. */
    default boolean sparseAvailable() {
        return false;
    }

    /**
     * What the last {@link #forward} computed of its sparse steps' tokens, per layer; null when it ran no step
     * sparse (or the engine has no sparse path).
     */
    default StepSparsity lastStepSparsity() {
        return null;
    }

    /**
     * Readies decode steps of 1 to {@code maxSequences} sequences before serving, for an engine that prepares a step
     * the first time it meets its size (the CUDA engine captures and tunes a graph, tens of milliseconds to a few
     * hundred), so that no request waits for it. Leaves no sequence open. Returns how many step sizes it readied.
     */
    default int prepareDecode(int maxSequences) {
        return 0;
    }

    /**
     * Whether {@link #nextTokens} picks on the device, so that a caller saves the logits' copy and the host's pick
     * by calling it rather than {@link #forward} where a {@link TokenChoice} expresses how to pick.
     */
    default boolean samplesOnDevice() {
        return false;
    }

    /**
     * Runs {@link #forward} for steps that each want only their last token's logits and picks each step's next token
     * by its {@link TokenChoice}: {@link #nextTokensOrLogits} with a choice for every step, so that a backend that
     * picks on its device returns one int per step rather than the logits.
     */
    default int[] nextTokens(List<Step> steps, List<TokenChoice> choices) {
        if (choices.stream().anyMatch(Objects::isNull)) {
            throw new IllegalArgumentException("nextTokens needs a token choice for every step");
        }
        return nextTokensOrLogits(steps, choices).tokens();
    }

    /**
     * Whether {@link #submitNextTokens} and {@link #submitFollowing} return before the tokens are picked, so that a
     * caller can queue the next decode step behind one whose tokens it has not read yet, and the device does not wait
     * for the host between the two (the CUDA engine). Where false they run at once.
     */
    default boolean runsAhead() {
        return false;
    }

    /** The tokens of a decode step submitted by {@link #submitNextTokens} or {@link #submitFollowing}. */
    interface PendingTokens {
        /** Waits for the step and returns its next tokens, per step in order; the same array every call. */
        int[] await();

        /** After {@link #await}: what the step computed of its sparse tokens, as {@link #lastStepSparsity}. */
        StepSparsity sparsity();
    }

    /**
     * {@link #nextTokens} for one-token steps, as a step that may still be running when this returns (see
     * {@link #runsAhead}). Its sequences already count its tokens. This default runs it at once.
     */
    default PendingTokens submitNextTokens(List<Step> steps, List<TokenChoice> choices) {
        int[] tokens = nextTokens(steps, choices);
        StepSparsity sparsity = lastStepSparsity();
        return new PendingTokens() {
            @Override
            public int[] await() {
                return tokens;
            }

            @Override
            public StepSparsity sparsity() {
                return sparsity;
            }
        };
    }

    /**
     * The decode step after {@code previous}, for the same sequences in the same order: {@code steps} holds one step
     * a sequence, with a placeholder token and the sparsity wanted, and each is fed instead the token picked for its
     * sequence in previous, which the host need not have read. This default waits for those tokens.
     */
    default PendingTokens submitFollowing(PendingTokens previous, List<Step> steps, List<TokenChoice> choices) {
        int[] fed = previous.await();
        List<Step> fedSteps = new ArrayList<>(steps.size());
        for (int i = 0; i < steps.size(); i++) {
            fedSteps.add(new Step(steps.get(i).sequence(), new int[]{fed[i]}, false, steps.get(i).sparse()));
        }
        return submitNextTokens(fedSteps, choices);
    }

    /**
     * What {@link #nextTokensOrLogits} gives per step: the token picked on the device ({@code tokens[i]}, where the
     * step had a choice), or the last logits to pick from on the host ({@code logits[i]}, where it had none).
     */
    record Picks(int[] tokens, float[][] logits) {
    }

    /**
     * One pass over steps that each want only their last token's logits: a step with a {@link TokenChoice} gets its
     * next token picked as {@link #nextTokens} picks it, a step whose choice is null gets its logits, so that only the
     * logits the host needs come back. This default picks on the host.
     */
    default Picks nextTokensOrLogits(List<Step> steps, List<TokenChoice> choices) {
        if (choices.size() != steps.size()) {
            throw new IllegalArgumentException(steps.size() + " steps but " + choices.size() + " token choices");
        }
        List<float[][]> all = forward(steps);
        int[] tokens = new int[steps.size()];
        float[][] logits = new float[steps.size()][];
        for (int i = 0; i < tokens.length; i++) {
            if (steps.get(i).allLogits()) throw new IllegalArgumentException("steps must want last logits only");
            float[] last = all.get(i)[0];
            if (choices.get(i) == null) logits[i] = last;
            else tokens[i] = choices.get(i).pick(last, steps.get(i).sequence().length() - 1);
        }
        return new Picks(tokens, logits);
    }

    @Override
    void close();
}
