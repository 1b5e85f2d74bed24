package io.dejavu.engine;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The host rule that the GPU sampler reproduces (CudaEngineGoldenTest compares the two on a GPU). */
class TokenChoiceTest {
    private static final float[] LOGITS = {1f, 3f, 2.5f, -1f, 3f, 0f};

    @Test
    void greedyTakesTheFirstLargest() {
        assertEquals(1, TokenChoice.greedy().pick(LOGITS, 0));
    }

    @Test
    void topKOneAndTinyTopPAreGreedy() {
        for (int seed = 0; seed < 20; seed++) {
            int k1 = new TokenChoice(1f, 1f, 1, seed).pick(LOGITS, 5);
            assertTrue(k1 == 1 || k1 == 4, "top-1 keeps only the largest logits, got " + k1);
            int p = new TokenChoice(1f, 0.01f, 0, seed).pick(LOGITS, 5);
            assertTrue(p == 1 || p == 4, "a tiny top-p keeps only the most probable, got " + p);
        }
    }

    @Test
    void drawsFollowTheSoftmax() {
        float[] logits = {0f, (float) Math.log(3)};  // probabilities 1/4 and 3/4
        int ones = 0, n = 20000;
        for (int i = 0; i < n; i++) ones += new TokenChoice(1f, 1f, 0, 7).pick(logits, i);
        assertEquals(0.75, ones / (double) n, 0.015);
    }

    @Test
    void topKDropsTheRest() {
        for (int i = 0; i < 200; i++) {
            int t = new TokenChoice(2f, 1f, 3, 11).pick(LOGITS, i);
            assertTrue(t == 1 || t == 2 || t == 4, "outside the top 3: " + t);
        }
    }

    @Test
    void sameSeedAndPositionDrawTheSame() {
        TokenChoice c = new TokenChoice(1.5f, 0.95f, 0, 123);
        assertEquals(c.pick(LOGITS, 9), c.pick(LOGITS, 9));
        boolean differs = false;
        for (int pos = 0; pos < 50 && !differs; pos++) differs = c.pick(LOGITS, pos) != c.pick(LOGITS, pos + 1);
        assertTrue(differs, "draws change with the position");
        assertNotEquals(c.drawSeed(1), c.drawSeed(2));
    }

    @Test
    void idsFromTheVocabularyLimitOnAreNeverPicked() {
        // ids 4 and 5 lie past a limit of 4: greedy then takes id 1, draws keep to ids 0-3
        assertEquals(1, new TokenChoice(0f, 1f, 0, 0, 4).pick(new float[]{1f, 3f, 2.5f, -1f, 9f, 9f}, 0));
        for (int i = 0; i < 200; i++) {
            int t = new TokenChoice(2f, 1f, 0, 5, 4).pick(new float[]{1f, 3f, 2.5f, -1f, 9f, 9f}, i);
            assertTrue(t < 4, "past the limit: " + t);
        }
        assertEquals(4, new TokenChoice(0f, 1f, 0, 0, 0).pick(new float[]{1f, 3f, 2.5f, -1f, 9f, 9f}, 0),
                "0 = the whole row");
    }

    @Test
    void badParametersAreRejected() {
        assertThrows(IllegalArgumentException.class, () -> new TokenChoice(1f, 1f, 0, 0, -1));
        assertThrows(IllegalArgumentException.class, () -> new TokenChoice(-1f, 1f, 0, 0));
        assertThrows(IllegalArgumentException.class, () -> new TokenChoice(1f, 0f, 0, 0));
        assertThrows(IllegalArgumentException.class, () -> new TokenChoice(1f, 1f, -2, 0));
    }
}
