package io.dejavu.engine.cpu;

import io.dejavu.engine.Sequence;
import io.dejavu.engine.Step;
import io.dejavu.model.OptModel;
import org.junit.jupiter.api.Test;

import java.util.List;

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
