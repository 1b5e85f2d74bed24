package io.dejavu.eval;

import io.dejavu.engine.Engine;
import io.dejavu.engine.Sequence;
import io.dejavu.engine.Step;
import io.dejavu.model.OptConfig;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;
import java.util.stream.IntStream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

class PerplexityEvaluatorTest {
    private static final int VOCAB = 50;

    /**
     * An engine whose logits give probability 1/2 to the token (previous + 1) mod VOCAB and spread the rest evenly,
     * and that records what it was fed: enough to check windows, BOS placement and the NLL arithmetic exactly.
     */
    private static final class CountingEngine implements Engine {
        final List<int[]> fed = new ArrayList<>();
        final OptConfig config = new OptConfig(8, 1, 1, 8, VOCAB, 16, 8, true, true, true, false, "relu", true, 2, 2, 1);

        @Override
        public OptConfig config() {
            return config;
        }

        @Override
        public String backend() {
            return "counting";
        }

        @Override
        public Sequence newSequence() {
            return new Sequence() {
                int length;

                @Override
                public int length() {
                    return length;
                }

                @Override
                public void close() {
                }
            };
        }

        @Override
        public List<float[][]> forward(List<Step> steps) {
            List<float[][]> out = new ArrayList<>();
            for (Step step : steps) {
                fed.add(step.tokens());
                float[][] logits = new float[step.tokens().length][VOCAB];
                // exp(l) = (VOCAB - 1) for the favoured token and 1 elsewhere: probability 1/2.
                for (int p = 0; p < logits.length; p++) logits[p][(step.tokens()[p] + 1) % VOCAB] = (float) Math.log(VOCAB - 1);
                out.add(logits);
            }
            return out;
        }

        @Override
        public void close() {
        }
    }

    @Test
    void windowsStartWithBosCoverEveryTokenOnceAndAverageTheNll() {
        CountingEngine engine = new CountingEngine();
        // 37 tokens with window 16: windows of 15 text tokens: 15 + 15 + 7.
        int[] ids = IntStream.range(0, 37).map(i -> (i * 7) % VOCAB).toArray();
        List<Integer> progress = new ArrayList<>();
        PerplexityEvaluator.Result r = new PerplexityEvaluator(engine, 16)
                .evaluate(ids, (done, windows, tokens, nll) -> progress.add(done * 1000 + windows));
        assertEquals(37, r.tokens());
        assertEquals(List.of(1003, 2003, 3003), progress);
        assertEquals(3, engine.fed.size());
        for (int w = 0; w < 3; w++) {
            int from = w * 15, to = Math.min(37, from + 15);
            int[] expected = new int[to - from];
            expected[0] = 2;
            System.arraycopy(ids, from, expected, 1, to - from - 1);
            assertArrayEquals(expected, engine.fed.get(w), "window " + w);
        }
        // Each target is (previous + 1) mod VOCAB with probability 1/2, else 1/(2(VOCAB-1)).
        double expectedNll = 0;
        for (int w = 0; w < 3; w++) {
            int from = w * 15, to = Math.min(37, from + 15);
            for (int i = from; i < to; i++) {
                int previous = i == from ? 2 : ids[i - 1];
                expectedNll += ids[i] == (previous + 1) % VOCAB ? Math.log(2) : Math.log(2.0 * (VOCAB - 1));
            }
        }
        assertEquals(expectedNll / 37, r.nllPerToken(), 1e-6);
    }

    @Test
    void rejectsWindowsLongerThanTheModelAndEmptyInput() {
        CountingEngine engine = new CountingEngine();
        var e = assertThrows(IllegalArgumentException.class, () -> new PerplexityEvaluator(engine, 17));
        assertEquals("perplexity window 17 must be in [2, 16] (the model's max_position_embeddings)", e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> new PerplexityEvaluator(engine, 16).evaluate(new int[0], (a, b, c, d) -> { }));
    }

    @Test
    void logSumExpIsStableAndExactForWideRows() {
        float[] x = new float[50_001];
        java.util.Arrays.fill(x, 1000f);
        assertEquals(1000 + Math.log(50_001), PerplexityEvaluator.logSumExp(x), 1e-6);
    }
}
