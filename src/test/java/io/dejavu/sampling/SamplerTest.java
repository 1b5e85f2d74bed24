package io.dejavu.sampling;

import org.junit.jupiter.api.Test;

import java.util.Arrays;
import java.util.HashSet;
import java.util.Random;
import java.util.Set;
import java.util.TreeSet;
import java.util.function.IntSupplier;
import java.util.stream.IntStream;

import static org.junit.jupiter.api.Assertions.*;

class SamplerTest {
    /** Probabilities at temperature 1 roughly 0.5, 0.25, 0.125, 0.0625, ... over ids 0..5; id 6 is past the limit. */
    private static final float[] LOGITS = {4f, 3.3069f, 2.6137f, 1.9206f, 1.2274f, 0.5343f, 100f};
    private static final int LIMIT = 6;

    private static Set<Integer> support(SamplingParams params, float[] logits, int limit, int draws) {
        Sampler sampler = new Sampler(params.withSeed(7L), limit);
        Set<Integer> seen = new TreeSet<>();
        for (int i = 0; i < draws; i++) seen.add(sampler.sample(logits));
        return seen;
    }

    @Test
    void greedyPicksArgmaxBelowTheLimitWithTiesToTheLowestId() {
        Sampler sampler = new Sampler(SamplingParams.greedy(), LIMIT);
        assertEquals(0, sampler.sample(LOGITS), "id 6 has the largest logit but is past vocabLimit");
        assertEquals(2, new Sampler(SamplingParams.greedy(), 5).sample(new float[]{1, 3, 5, 5, 2}));
        assertEquals(1, new Sampler(SamplingParams.greedy(), 5).sample(new float[]{1, 5, 5, 5, 2}));
    }

    @Test
    void samplingNeverChoosesAnIdPastTheLimit() {
        assertEquals(Set.of(0, 1, 2, 3, 4, 5), support(SamplingParams.defaults().withTemperature(2), LOGITS, LIMIT, 4000));
    }

    @Test
    void topKOfOneIsGreedy() {
        float[] logits = {0.5f, 2f, 2f, 1f, -3f};
        assertEquals(Set.of(1), support(SamplingParams.defaults().withTopK(1), logits, 5, 500));
    }

    @Test
    void topKKeepsTheKMostProbable() {
        assertEquals(Set.of(0, 1, 2), support(SamplingParams.defaults().withTopK(3), LOGITS, LIMIT, 2000));
    }

    @Test
    void topPKeepsTheSmallestPrefixReachingTheMass() {
        // Cumulative mass of ids 0, 1, 2, 3 is about 0.51, 0.76, 0.89, 0.95.
        assertEquals(Set.of(0), support(SamplingParams.defaults().withTopP(0.5), LOGITS, LIMIT, 2000));
        assertEquals(Set.of(0, 1), support(SamplingParams.defaults().withTopP(0.7), LOGITS, LIMIT, 2000));
        assertEquals(Set.of(0, 1, 2), support(SamplingParams.defaults().withTopP(0.8), LOGITS, LIMIT, 2000));
        assertEquals(Set.of(0, 1), support(SamplingParams.defaults().withTopK(2).withTopP(0.99), LOGITS, LIMIT, 2000),
                "top-p applies after top-k");
    }

    @Test
    void topPOverAFullVocabularyDrawsOnlyFromTheNucleus() {
        Random random = new Random(11);
        float[] logits = new float[50272];
        for (int i = 0; i < logits.length; i++) logits[i] = (float) (random.nextGaussian() * 4);
        int limit = 50265;
        // The nucleus by the definition: sort descending, keep the shortest prefix whose probability reaches top_p.
        Integer[] order = IntStream.range(0, limit).boxed().toArray(Integer[]::new);
        Arrays.sort(order, (a, b) -> Float.compare(logits[b], logits[a]));
        double z = 0;
        for (int id = 0; id < limit; id++) z += Math.exp(logits[id]);
        Set<Integer> nucleus = new HashSet<>();
        double mass = 0;
        for (int j = 0; mass < 0.3 * z; j++) {
            nucleus.add(order[j]);
            mass += Math.exp(logits[order[j]]);
        }
        Set<Integer> drawn = support(SamplingParams.defaults().withTopP(0.3), logits, limit, 5000);
        assertTrue(nucleus.containsAll(drawn), "drawn outside the nucleus: " + drawn.stream().filter(id -> !nucleus.contains(id)).toList());
        assertTrue(drawn.size() > nucleus.size() * 0.7, drawn.size() + " of " + nucleus.size());
    }

    @Test
    void minPDropsTokensBelowAFractionOfTheMostProbable() {
        // Relative to id 0: id 1 is 0.5, id 2 0.25, id 3 0.125.
        assertEquals(Set.of(0, 1), support(SamplingParams.defaults().withMinP(0.4), LOGITS, LIMIT, 2000));
        assertEquals(Set.of(0, 1, 2, 3), support(SamplingParams.defaults().withMinP(0.1), LOGITS, LIMIT, 4000));
    }

    @Test
    void lowTemperatureApproachesGreedyAndFrequenciesFollowTheDistribution() {
        assertEquals(Set.of(0), support(SamplingParams.defaults().withTemperature(0.01), LOGITS, LIMIT, 2000));
        Sampler sampler = new Sampler(SamplingParams.defaults().withSeed(3L), LIMIT);
        int[] counts = new int[LIMIT];
        int draws = 20000;
        for (int i = 0; i < draws; i++) counts[sampler.sample(LOGITS)]++;
        assertEquals(0.5, counts[0] / (double) draws, 0.02);
        assertEquals(0.25, counts[1] / (double) draws, 0.02);
    }

    @Test
    void sameSeedSameTokensDifferentSeedDifferentTokens() {
        float[] logits = new float[50272];
        for (int i = 0; i < logits.length; i++) logits[i] = (float) Math.sin(i * 0.37) * 3;
        SamplingParams params = SamplingParams.defaults().withTopP(0.95).withTopK(200);
        assertArrayEquals(run(params.withSeed(42L), logits), run(params.withSeed(42L), logits));
        assertFalse(Arrays.equals(run(params.withSeed(42L), logits), run(params.withSeed(43L), logits)));
        assertFalse(Arrays.equals(run(params, logits), run(params, logits)), "no seed: fresh randomness");
    }

    /**
     * Over a vocabulary of many draw blocks, frequencies follow the weights wherever the mass lies: the first id,
     * a block's last id, the next block's first, and the vocabulary's last, with nothing drawn in between.
     */
    @Test
    void drawsAcrossTheVocabularyFollowTheDistribution() {
        float[] logits = new float[50272];
        Arrays.fill(logits, -1e9f);
        int[] ids = {0, 255, 256, 50264};
        double[] shares = {0.1, 0.2, 0.3, 0.4};
        for (int j = 0; j < ids.length; j++) logits[ids[j]] = (float) Math.log(shares[j]);
        Sampler sampler = new Sampler(SamplingParams.defaults().withSeed(11L), 50265);
        int draws = 40000;
        int[] counts = new int[logits.length];
        for (int i = 0; i < draws; i++) counts[sampler.sample(logits)]++;
        for (int j = 0; j < ids.length; j++) assertEquals(shares[j], counts[ids[j]] / (double) draws, 0.01);
        assertEquals(draws, Arrays.stream(ids).map(id -> counts[id]).sum());
    }

    /** With no filter the draw skips the candidate lists; a min-p that keeps every token takes the general path. */
    @Test
    void theUnfilteredDrawGivesTheTokensOfTheGeneralPath() {
        float[] logits = new float[50272];
        for (int i = 0; i < logits.length; i++) logits[i] = (float) Math.sin(i * 0.37) * 3;
        SamplingParams unfiltered = SamplingParams.defaults().withTemperature(0.8).withSeed(7L);
        assertArrayEquals(run(unfiltered.withMinP(Double.MIN_VALUE), logits), run(unfiltered, logits));
    }

    private static int[] run(SamplingParams params, float[] logits) {
        Sampler sampler = new Sampler(params, 50265);
        IntSupplier next = () -> sampler.sample(logits);
        int[] out = new int[32];
        for (int i = 0; i < out.length; i++) out[i] = next.getAsInt();
        return out;
    }

    @Test
    void repetitionPenaltyDividesPositiveAndMultipliesNegativeLogitsOfPromptAndOutput() {
        Sampler sampler = new Sampler(SamplingParams.defaults().withRepetitionPenalty(2), 5);
        sampler.observePrompt(new int[]{0, 1, 1});
        sampler.observe(3);
        float[] logits = {4f, -1f, 3f, 0.5f, 7f};
        assertArrayEquals(new float[]{2f, -2f, 3f, 0.25f, 7f}, sampler.penalized(logits, 5), 1e-6f);
        assertArrayEquals(new float[]{4f, -1f, 3f, 0.5f, 7f}, logits, "input untouched");
    }

    @Test
    void presenceAndFrequencyPenaltiesCountGeneratedTokensOnly() {
        Sampler sampler = new Sampler(SamplingParams.defaults().withPresencePenalty(0.5).withFrequencyPenalty(0.25), 5);
        sampler.observePrompt(new int[]{0, 4});
        sampler.observe(1);
        sampler.observe(2);
        sampler.observe(2);
        sampler.observe(2);
        sampler.observe(4);
        float[] logits = {1f, 1f, 1f, 1f, 1f};
        // logit - presence - count * frequency: id 1 once, id 2 three times, id 4 once (its prompt use is not counted).
        assertArrayEquals(new float[]{1f, 0.25f, -0.25f, 1f, 0.25f}, sampler.penalized(logits, 5), 1e-6f);
    }

    @Test
    void penaltiesSteerGreedyDecoding() {
        Sampler sampler = new Sampler(SamplingParams.greedy().withFrequencyPenalty(2), 3);
        float[] logits = {3f, 2f, 0f};
        int first = sampler.sample(logits);
        sampler.observe(first);
        assertEquals(0, first);
        assertEquals(1, sampler.sample(logits), "3 - 2 (presence 0 + 1 * frequency 2) = 1 < 2");
    }

    @Test
    void logprobsAreTheModelsOwnDistribution() {
        Sampler sampler = new Sampler(SamplingParams.greedy(), LIMIT);
        SampleResult result = sampler.sample(LOGITS, 3);
        double z = 0;
        for (int i = 0; i < LIMIT; i++) z += Math.exp(LOGITS[i]);
        assertEquals(0, result.token());
        assertEquals(LOGITS[0] - Math.log(z), result.logprob(), 1e-6);
        assertEquals(3, result.top().size());
        assertEquals(new TokenLogprob(1, LOGITS[1] - Math.log(z)).token(), result.top().get(1).token());
        assertEquals(LOGITS[2] - Math.log(z), result.top().get(2).logprob(), 1e-6);
        assertTrue(new Sampler(SamplingParams.greedy(), LIMIT).sample(LOGITS, 0).top().isEmpty());
    }

    @Test
    void invalidParametersNameTheParameterValueAndRange() {
        assertMessage("temperature = 2.5 is out of range: must be [0, 2]", () -> SamplingParams.defaults().withTemperature(2.5));
        assertMessage("temperature = NaN", () -> SamplingParams.defaults().withTemperature(Double.NaN));
        assertMessage("top_p = 0.0 is out of range: must be (0, 1]", () -> SamplingParams.defaults().withTopP(0));
        assertMessage("top_k = -1", () -> SamplingParams.defaults().withTopK(-1));
        assertMessage("min_p = 1.5", () -> SamplingParams.defaults().withMinP(1.5));
        assertMessage("repetition_penalty = 0.0", () -> SamplingParams.defaults().withRepetitionPenalty(0));
        assertMessage("presence_penalty = -3.0", () -> SamplingParams.defaults().withPresencePenalty(-3));
        assertMessage("frequency_penalty = 2.1", () -> SamplingParams.defaults().withFrequencyPenalty(2.1));
        assertMessage("vocabLimit = 0", () -> new Sampler(SamplingParams.greedy(), 0));
    }

    private static void assertMessage(String expectedStart, org.junit.jupiter.api.function.Executable action) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, action);
        assertTrue(e.getMessage().startsWith(expectedStart), e.getMessage());
    }
}
