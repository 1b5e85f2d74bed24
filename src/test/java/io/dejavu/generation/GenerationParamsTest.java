package io.dejavu.generation;

import io.dejavu.sampling.SamplingParams;
import org.junit.jupiter.api.Test;

import java.util.Arrays;
import java.util.List;

import static org.junit.jupiter.api.Assertions.*;

class GenerationParamsTest {
    private static final SamplingParams GREEDY = SamplingParams.greedy();

    @Test
    void invalidValuesAreNamedInTheMessage() {
        assertMessage("max_tokens = 0 must be >= 1", () -> GenerationParams.of(0, GREEDY));
        assertMessage("stop has 5 sequences; at most 4 are allowed",
                () -> GenerationParams.of(1, GREEDY).withStop(List.of("a", "b", "c", "d", "e")));
        assertMessage("stop sequences must be non-empty strings", () -> GenerationParams.of(1, GREEDY).withStop(List.of("")));
        assertMessage("stop sequences must be non-empty strings",
                () -> GenerationParams.of(1, GREEDY).withStop(Arrays.asList("a", null)));
        assertMessage("top_logprobs = 21 is out of range: must be [0, 20]", () -> GenerationParams.of(1, GREEDY).withLogprobs(21));
        assertMessage("top_logprobs = 2 needs logprobs = true", () -> new GenerationParams(1, List.of(), GREEDY, false, 2));
    }

    @Test
    void finishReasonsUseOpenAiWireNames() {
        assertEquals(List.of("stop", "length", "cancelled", "error"),
                Arrays.stream(FinishReason.values()).map(FinishReason::wireName).toList());
    }

    private static void assertMessage(String expected, org.junit.jupiter.api.function.Executable action) {
        assertEquals(expected, assertThrows(IllegalArgumentException.class, action).getMessage());
    }
}
