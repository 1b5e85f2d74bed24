package io.dejavu.bench;

import io.dejavu.engine.Engine;
import io.dejavu.engine.Sequence;
import io.dejavu.engine.Step;
import io.dejavu.model.OptConfig;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;

/** Seeded pseudo-random prompts for the benchmarks, whose speed depends on the prompts' lengths, not their words. */
public final class RandomPrompts {
    private RandomPrompts() {
    }

    /** The BOS id, then ids past OPT's special tokens (0-3). */
    public static int[] of(Random random, OptConfig config, int length) {
        int[] prompt = new int[length];
        prompt[0] = config.bosTokenId();
        for (int i = 1; i < length; i++) prompt[i] = 4 + random.nextInt(config.vocabSize() - 4);
        return prompt;
    }

    /**
     * Opens {@code batch} sequences (added to {@code sequences}, which the caller closes) and prefills them with
     * prompts of {@code length} in one pass; returns each one's last logits.
     */
    public static List<float[][]> prefill(Engine engine, int batch, int length, Random random, List<Sequence> sequences) {
        List<Step> prefill = new ArrayList<>();
        for (int b = 0; b < batch; b++) {
            Sequence s = engine.newSequence();
            sequences.add(s);
            prefill.add(Step.last(s, of(random, engine.config(), length)));
        }
        return engine.forward(prefill);
    }
}
