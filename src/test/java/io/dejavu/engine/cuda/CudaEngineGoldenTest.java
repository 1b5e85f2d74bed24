package io.dejavu.engine.cuda;

import com.fasterxml.jackson.databind.JsonNode;
import io.dejavu.engine.Engine;
import io.dejavu.engine.Sequence;
import io.dejavu.engine.Step;
import io.dejavu.engine.TokenChoice;
import io.dejavu.model.OptModel;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The CUDA engine against Hugging Face transformers' outputs (fp32 math on the fp16 weights) for the tiny golden
 * checkpoints: pre-LN, the opt-350m layout (post-LN with projections), and the decoder.* / tied-head layout.
 */
class CudaEngineGoldenTest {
    static final double LOGITS_TOLERANCE = 2e-3;

    @BeforeEach
    void cuda() {
        Gpu.assumeCuda();
    }

    private static String referenceOf(String model) {
        return model.startsWith("opt-tiny-preln") ? "opt-tiny-preln" : model;
    }

    @ParameterizedTest
    @ValueSource(strings = {"opt-tiny-preln", "opt-tiny-postln-proj"})
    void lastLogitsAndGreedyIdsMatchTransformers(String name) throws Exception {
        JsonNode cases = Gpu.reference(referenceOf(name)).get("cases");
        try (OptModel model = OptModel.load(Gpu.golden(name)); CudaEngine engine = Gpu.engine(model)) {
            for (JsonNode c : cases) {
                int[] prompt = Gpu.ints(c.get("input_ids"));
                int[] expected = Gpu.ints(c.get("greedy_ids"));
                try (Sequence seq = engine.newSequence()) {
                    float[] logits = engine.forward(List.of(Step.last(seq, prompt))).get(0)[0];
                    double err = Gpu.relL2(logits, Gpu.floats(c.get("last_logits")));
                    assertTrue(err <= LOGITS_TOLERANCE, name + " '" + c.get("prompt").asText() + "': rel L2 " + err);
                    int[] got = new int[expected.length];
                    got[0] = Gpu.argmax(logits);
                    for (int i = 1; i < got.length; i++) {
                        got[i] = engine.nextTokens(List.of(Step.last(seq, got[i - 1])), List.of(TokenChoice.greedy()))[0];
                    }
                    assertArrayEquals(expected, got, name + " greedy ids of '" + c.get("prompt").asText() + "'");
                }
            }
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"opt-tiny-preln", "opt-tiny-postln-proj"})
    void allLogitsGiveTransformersTop5AtEveryPosition(String name) throws Exception {
        JsonNode cases = Gpu.reference(name).get("cases");
        try (OptModel model = OptModel.load(Gpu.golden(name)); CudaEngine engine = Gpu.engine(model)) {
            for (JsonNode c : cases) {
                int[] prompt = Gpu.ints(c.get("input_ids"));
                try (Sequence seq = engine.newSequence()) {
                    float[][] rows = engine.forward(List.of(new Step(seq, prompt, true))).get(0);
                    assertEquals(prompt.length, rows.length);
                    for (int pos = 0; pos < prompt.length; pos++) {
                        int[] ids = Gpu.ints(c.get("top5_ids").get(pos));
                        float[] want = Gpu.floats(c.get("top5_logits").get(pos));
                        float[] got = new float[ids.length];
                        for (int k = 0; k < ids.length; k++) got[k] = rows[pos][ids[k]];
                        assertEquals(ids[0], Gpu.argmax(rows[pos]), name + " argmax at position " + pos);
                        double err = Gpu.relL2(got, want);
                        assertTrue(err <= LOGITS_TOLERANCE, name + " top-5 logits at " + pos + ": rel L2 " + err);
                    }
                }
            }
        }
    }

    /** Prompts of different lengths in one batch (prefill, then batched graph decode) equal each run alone. */
    @ParameterizedTest
    @ValueSource(strings = {"opt-tiny-preln", "opt-tiny-postln-proj"})
    void batchOfDifferentLengthsEqualsEachAlone(String name) throws Exception {
        JsonNode cases = Gpu.reference(name).get("cases");
        int steps = 10;
        try (OptModel model = OptModel.load(Gpu.golden(name)); CudaEngine engine = Gpu.engine(model)) {
            List<int[]> prompts = new ArrayList<>();
            for (JsonNode c : cases) prompts.add(Gpu.ints(c.get("input_ids")));
            // alone
            List<float[][]> alone = new ArrayList<>();
            for (int[] prompt : prompts) {
                try (Sequence seq = engine.newSequence()) {
                    float[][] trace = new float[steps + 1][];
                    trace[0] = engine.forward(List.of(Step.last(seq, prompt))).get(0)[0];
                    for (int i = 1; i <= steps; i++) {
                        trace[i] = engine.forward(List.of(Step.last(seq, Gpu.argmax(trace[i - 1])))).get(0)[0];
                    }
                    alone.add(trace);
                }
            }
            // together
            List<Sequence> seqs = new ArrayList<>();
            for (int i = 0; i < prompts.size(); i++) seqs.add(engine.newSequence());
            List<Step> first = new ArrayList<>();
            for (int i = 0; i < prompts.size(); i++) first.add(Step.last(seqs.get(i), prompts.get(i)));
            List<float[][]> out = engine.forward(first);
            for (int step = 0; step <= steps; step++) {
                List<Step> next = new ArrayList<>();
                for (int i = 0; i < prompts.size(); i++) {
                    float[] got = out.get(i)[0];
                    float[] want = alone.get(i)[step];
                    double err = Gpu.relL2(got, want);
                    assertTrue(err <= 1e-3, name + " sequence " + i + " step " + step + ": rel L2 " + err);
                    assertEquals(Gpu.argmax(want), Gpu.argmax(got), name + " sequence " + i + " step " + step);
                    next.add(Step.last(seqs.get(i), Gpu.argmax(want)));
                }
                if (step < steps) out = engine.forward(next);
            }
            for (Sequence s : seqs) s.close();
        }
    }

    /** A prompt longer than one pass is split into chunks that give the same logits. */
    @ParameterizedTest
    @ValueSource(strings = {"opt-tiny-preln"})
    void longPromptInChunksEqualsOnePass(String name) throws Exception {
        int[] prompt = new int[100];
        for (int i = 0; i < prompt.length; i++) prompt[i] = (i * 7919) % 50000 + 3;
        try (OptModel model = OptModel.load(Gpu.golden(name))) {
            float[][] whole, chunked;
            try (CudaEngine engine = Gpu.engine(model); Sequence seq = engine.newSequence()) {
                whole = engine.forward(List.of(new Step(seq, prompt, true))).get(0);
            }
            try (CudaEngine engine = Gpu.engine(model, CudaEngine.Options.defaults().withMaxBatchTokens(24));
                 Sequence seq = engine.newSequence()) {
                chunked = engine.forward(List.of(new Step(seq, prompt, true))).get(0);
            }
            assertEquals(whole.length, chunked.length);
            for (int i = 0; i < whole.length; i++) {
                double err = Gpu.relL2(chunked[i], whole[i]);
                assertTrue(err <= 1e-3, "position " + i + ": rel L2 " + err);
            }
        }
    }

    /** The GPU's sampler draws what the host rule (TokenChoice.pick) draws from the same logits. */
    @ParameterizedTest
    @ValueSource(strings = {"opt-tiny-preln"})
    void gpuSamplingMatchesTheHostRule(String name) throws Exception {
        int[] prompt = Gpu.ints(Gpu.reference(name).get("cases").get(0).get("input_ids"));
        List<TokenChoice> choices = List.of(new TokenChoice(0.8f, 1f, 0, 1), new TokenChoice(1f, 0.9f, 0, 2),
                new TokenChoice(1.2f, 1f, 40, 3), new TokenChoice(0.7f, 0.8f, 100, 4), new TokenChoice(1f, 1f, 1, 5));
        try (OptModel model = OptModel.load(Gpu.golden(name)); CudaEngine engine = Gpu.engine(model)) {
            int differing = 0;
            for (TokenChoice choice : choices) {
                for (int trial = 0; trial < 8; trial++) {
                    TokenChoice c = new TokenChoice(choice.temperature(), choice.topP(), choice.topK(),
                            choice.seed() * 100 + trial);
                    try (Sequence a = engine.newSequence(); Sequence b = engine.newSequence()) {
                        float[] logits = engine.forward(List.of(Step.last(a, prompt))).get(0)[0];
                        int host = c.pick(logits, prompt.length - 1);
                        int gpu = engine.nextTokens(List.of(Step.last(b, prompt)), List.of(c))[0];
                        if (host != gpu) differing++;
                    }
                }
            }
            // thresholds found by bisection may differ from the exact ones on a near-tie: allow one in 40
            assertTrue(differing <= 1, differing + " of 40 draws differ between GPU and host");

            // ids from a vocabulary limit on are never picked: one below the greedy token, and an odd one (the
            // kernel's greedy pass reads four logits a load only where the row divides by four)
            float[] logits;
            try (Sequence a = engine.newSequence()) {
                logits = engine.forward(List.of(Step.last(a, prompt))).get(0)[0];
            }
            int argmax = TokenChoice.greedy().pick(logits, 0);
            for (int limit : new int[]{Math.max(1, argmax), Math.max(1, argmax - 3) | 1}) {
                for (TokenChoice c : List.of(new TokenChoice(0f, 1f, 0, 0, limit), new TokenChoice(1.5f, 1f, 0, 9, limit))) {
                    try (Sequence b = engine.newSequence()) {
                        int gpu = engine.nextTokens(List.of(Step.last(b, prompt)), List.of(c))[0];
                        assertTrue(gpu < limit, "limit " + limit + ": picked " + gpu);
                        if (c.isGreedy()) assertEquals(c.pick(logits, prompt.length - 1), gpu, "limit " + limit);
                    }
                }
            }
        }
    }

    /**
     * In one pass, a step with a token choice gets the GPU's pick and a step without one gets its logits, both as a
     * forward pass of the same steps gives them (bit for bit: the same kernels).
     */
    @ParameterizedTest
    @ValueSource(strings = {"opt-tiny-preln"})
    void picksAndLogitsInOnePass(String name) throws Exception {
        JsonNode cases = Gpu.reference(name).get("cases");
        int[] first = Gpu.ints(cases.get(0).get("input_ids")), second = Gpu.ints(cases.get(1).get("input_ids"));
        try (OptModel model = OptModel.load(Gpu.golden(name)); CudaEngine engine = Gpu.engine(model)) {
            List<float[][]> forward;
            try (Sequence a = engine.newSequence(); Sequence b = engine.newSequence()) {
                forward = engine.forward(List.of(Step.last(a, first), Step.last(b, second)));
            }
            try (Sequence a = engine.newSequence(); Sequence b = engine.newSequence()) {
                Engine.Picks picks = engine.nextTokensOrLogits(List.of(Step.last(a, first), Step.last(b, second)),
                        Arrays.asList(TokenChoice.greedy(), null));
                assertEquals(TokenChoice.greedy().pick(forward.get(0)[0], 0), picks.tokens()[0]);
                assertNull(picks.logits()[0], "a picked step's logits stay on the GPU");
                assertArrayEquals(forward.get(1)[0], picks.logits()[1]);
            }
        }
    }

    /**
     * Decode steps run ahead (each queued before the tokens of the one before are read; those tokens reach it on the
     * GPU) give the tokens of steps run one at a time, greedy and seeded draws alike; a pass in between (another
     * sequence's prefill) is honoured: the step after it is fed from the host; and the engine closes behind a step
     * that was never read.
     */
    @ParameterizedTest
    @ValueSource(strings = {"opt-tiny-preln"})
    void stepsRunAheadGiveTheTokensOfStepsRunInTurn(String name) throws Exception {
        JsonNode cases = Gpu.reference(name).get("cases");
        List<int[]> prompts = List.of(Gpu.ints(cases.get(0).get("input_ids")), Gpu.ints(cases.get(1).get("input_ids")),
                Gpu.ints(cases.get(0).get("input_ids")));
        List<TokenChoice> choices = List.of(TokenChoice.greedy(), new TokenChoice(0.9f, 0.95f, 0, 5),
                new TokenChoice(1.1f, 1, 20, 6));
        int steps = 16;
        try (OptModel model = OptModel.load(Gpu.golden(name)); CudaEngine engine = Gpu.engine(model)) {
            assertTrue(engine.runsAhead());
            int[][] inTurn = new int[steps][];
            List<Sequence> seqs = open(engine, 3);
            int[] next = first(engine, seqs, prompts, choices);
            for (int i = 0; i < steps; i++) {
                List<Step> batch = new ArrayList<>();
                for (int k = 0; k < 3; k++) batch.add(Step.last(seqs.get(k), next[k]));
                next = inTurn[i] = engine.nextTokens(batch, choices);
            }
            seqs.forEach(Sequence::close);

            seqs = open(engine, 3);
            next = first(engine, seqs, prompts, choices);
            List<Step> batch = new ArrayList<>();
            for (int k = 0; k < 3; k++) batch.add(Step.last(seqs.get(k), next[k]));
            Engine.PendingTokens pending = engine.submitNextTokens(batch, choices);
            for (int i = 0; i < steps; i++) {
                if (i == steps / 2) {
                    try (Sequence other = engine.newSequence()) {
                        engine.forward(List.of(Step.last(other, prompts.get(1))));
                    }
                }
                Engine.PendingTokens following = i + 1 < steps ? engine.submitFollowing(pending, batch, choices) : null;
                assertArrayEquals(inTurn[i], pending.await(), "step " + i);
                assertArrayEquals(inTurn[i], pending.await(), "the same tokens when asked again");
                pending = following;
            }
            for (int k = 0; k < 3; k++) {
                assertEquals(prompts.get(k).length + steps, seqs.get(k).length(), "every step counted once");
            }
            // a step queued and never read: the engine closes behind it (memcheck sees any copy into freed memory)
            batch.clear();
            for (int k = 0; k < 3; k++) batch.add(Step.last(seqs.get(k), inTurn[steps - 1][k]));
            engine.submitNextTokens(batch, choices);
        }
    }

    private static List<Sequence> open(CudaEngine engine, int count) {
        List<Sequence> seqs = new ArrayList<>();
        for (int k = 0; k < count; k++) seqs.add(engine.newSequence());
        return seqs;
    }

    /** Prefills each sequence with its prompt; returns the tokens picked after them. */
    private static int[] first(CudaEngine engine, List<Sequence> seqs, List<int[]> prompts, List<TokenChoice> choices) {
        List<Step> steps = new ArrayList<>();
        for (int k = 0; k < seqs.size(); k++) steps.add(Step.last(seqs.get(k), prompts.get(k)));
        return engine.nextTokens(steps, choices);
    }

    @ParameterizedTest
    @ValueSource(strings = {"opt-tiny-preln"})
    void fullKvCacheSaysSo(String name) throws Exception {
        try (OptModel model = OptModel.load(Gpu.golden(name));
             CudaEngine engine = CudaEngine.load(model, CudaEngine.Options.defaults()
                     .withKvCacheBytes(KvCachePool.blockBytes(model.config()) * 2))) {
            assertEquals(2, engine.kvCacheBlocks());
            int[] prompt = new int[40];
            Arrays.fill(prompt, 5);
            try (Sequence seq = engine.newSequence()) {
                GpuOutOfMemoryException e = org.junit.jupiter.api.Assertions.assertThrows(GpuOutOfMemoryException.class,
                        () -> engine.forward(List.of(Step.last(seq, prompt))));
                assertTrue(e.getMessage().contains("KV cache full"), e.getMessage());
            }
            assertEquals(2, engine.freeKvCacheBlocks(), "closing the sequence returns its blocks");
        }
    }
}
