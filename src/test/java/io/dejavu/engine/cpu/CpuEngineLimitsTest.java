package io.dejavu.engine.cpu;

import io.dejavu.engine.Sequence;
import io.dejavu.engine.Step;
import io.dejavu.model.OptModel;
import org.junit.jupiter.api.Test;

import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class CpuEngineLimitsTest {

    @Test
    void kvCacheFillsToMaxPositionsThenRefusesWithClearMessage() {
        try (OptModel model = OptModel.load(GoldenReference.shared().resolve("golden/opt-tiny-preln"));
             CpuEngine engine = new CpuEngine(model, 2);
             Sequence s = engine.newSequence()) {
            int max = model.config().maxPositionEmbeddings();
            engine.forward(List.of(Step.last(s, new int[max - 1])));
            engine.forward(List.of(Step.last(s, 5)));
            assertEquals(max, s.length());
            var e = assertThrows(IllegalArgumentException.class, () -> engine.forward(List.of(Step.last(s, 5))));
            assertTrue(e.getMessage().contains("max_position_embeddings is " + max), e.getMessage());
            assertEquals(max, s.length());
        }
    }

    @Test
    void rejectsTokenIdsOutsideTheVocabularyAndClosedSequences() {
        try (OptModel model = OptModel.load(GoldenReference.shared().resolve("golden/opt-tiny-preln"));
             CpuEngine engine = new CpuEngine(model, 1)) {
            Sequence s = engine.newSequence();
            int vocab = model.config().vocabSize();
            var e = assertThrows(IllegalArgumentException.class, () -> engine.forward(List.of(Step.last(s, vocab))));
            assertTrue(e.getMessage().contains("outside the vocabulary"), e.getMessage());
            s.close();
            assertThrows(IllegalStateException.class, () -> engine.forward(List.of(Step.last(s, 5))));
        }
    }

    /**
     * A closed sequence's KV blocks go to the next sequence, still holding its keys and values: the next sequence's
     * logits must equal those of an engine that never ran anything.
     */
    @Test
    void reusedKvBlocksGiveTheSameLogitsAsFreshOnes() {
        int[] first = {2, 100, 200, 300, 400, 500, 600, 700}, second = {2, 9, 8, 7};
        try (OptModel model = OptModel.load(GoldenReference.shared().resolve("golden/opt-tiny-preln"));
             CpuEngine fresh = new CpuEngine(model, 1); CpuEngine reused = new CpuEngine(model, 1)) {
            float[] expected;
            try (Sequence s = fresh.newSequence()) {
                fresh.forward(List.of(Step.last(s, second)));
                expected = fresh.forward(List.of(Step.last(s, 11))).get(0)[0];
            }
            try (Sequence s = reused.newSequence()) {
                reused.forward(List.of(Step.last(s, first)));
            }
            assertEquals(2, reused.freeKvBlocks());  // one block of keys and one of values, back in the pool
            float[] got;
            try (Sequence s = reused.newSequence()) {
                reused.forward(List.of(Step.last(s, second)));
                assertEquals(0, reused.freeKvBlocks());
                got = reused.forward(List.of(Step.last(s, 11))).get(0)[0];
            }
            assertArrayEquals(expected, got);
        }
    }

    /** transformers' "gelu" is the erf form: x * Phi(x). Reference values from torch.nn.functional.gelu. */
    @Test
    void geluIsTheErfForm() {
        assertEquals(0.8413447460685429, CpuEngine.gelu(1f), 1e-6);
        assertEquals(-0.15426877, CpuEngine.gelu(-0.5f), 1e-6);
        assertEquals(2.9959502, CpuEngine.gelu(3f), 1e-6);
        assertEquals(-0.0040496, CpuEngine.gelu(-3f), 1e-6);
        assertEquals(0f, CpuEngine.gelu(0f));
    }
}
