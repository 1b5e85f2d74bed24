package io.dejavu.generation;

import io.dejavu.sampling.SamplingParams;
import io.dejavu.tokenizer.Tokenizer;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import static org.junit.jupiter.api.Assertions.*;

/** Generation with the shipped opt-demo tokenizer, driven by hand-made logits that make greedy decoding follow a script. */
class GenerationTest {
    private static final int EOS = 2;
    private static final int[] PROMPT = {2, 100, 200};
    private static Tokenizer tokenizer;

    @BeforeAll
    static void loadTokenizer() {
        tokenizer = Tokenizer.load(Path.of("models/opt-demo"));
    }

    /** Logits (padded past the vocabulary, where the largest value sits) whose greedy choice is id. */
    private static float[] pointingAt(int id) {
        float[] logits = new float[tokenizer.vocabSize() + 8];
        logits[logits.length - 1] = 100;
        logits[id] = 50;
        return logits;
    }

    private static List<TokenOutput> follow(Generation generation, int... script) {
        List<TokenOutput> outputs = new ArrayList<>();
        for (int id : script) {
            TokenOutput output = generation.next(pointingAt(id));
            assertEquals(id, output.tokenId());
            outputs.add(output);
            if (output.finished()) break;
        }
        return outputs;
    }

    private static GenerationParams params(int maxTokens, String... stop) {
        return GenerationParams.of(maxTokens, SamplingParams.greedy()).withStop(List.of(stop));
    }

    private static String pieces(List<TokenOutput> outputs) {
        return String.join("|", outputs.stream().map(TokenOutput::text).toList());
    }

    @Test
    void streamsTheDecodedTextAndStopsAtMaxTokensWithLength() {
        int[] ids = tokenizer.encode(" the king said unto them");
        Generation generation = new Generation(PROMPT, params(ids.length), tokenizer, EOS);
        List<TokenOutput> outputs = follow(generation, ids);
        assertEquals(ids.length, outputs.size());
        for (int i = 0; i < ids.length - 1; i++) assertNull(outputs.get(i).finish());
        assertEquals(FinishReason.LENGTH, outputs.getLast().finish());
        assertEquals(" the king said unto them", generation.text());
        assertEquals(tokenizer.decode(ids), String.join("", outputs.stream().map(TokenOutput::text).toList()));
        assertEquals(ids.length, generation.generatedCount());
        assertArrayEquals(ids, generation.generatedIds());
        assertTrue(Double.isNaN(outputs.getFirst().logprob()), "no logprobs asked for");
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> generation.next(pointingAt(ids[0])));
        assertEquals("the generation has already finished (length)", e.getMessage());
    }

    @Test
    void endOfSequenceStopsWithNoText() {
        int[] ids = tokenizer.encode(" and");
        Generation generation = new Generation(PROMPT, params(10), tokenizer, EOS);
        List<TokenOutput> outputs = follow(generation, ids[0], EOS);
        assertEquals(FinishReason.STOP, outputs.getLast().finish());
        assertEquals("", outputs.getLast().text());
        assertEquals(" and", generation.text());
        assertEquals(2, generation.generatedCount(), "the end-of-sequence token counts as generated");
    }

    @Test
    void aStopSequenceSplitOverThreeTokensIsHeldAndNotEmitted() {
        int[] ids = tokenizer.encode(" one two three four");
        assertTrue(ids.length >= 4, Arrays.toString(ids));
        String[] texts = Arrays.stream(ids).mapToObj(id -> tokenizer.decode(new int[]{id})).toArray(String[]::new);
        // The stop string starts inside token 1, covers token 2 and ends inside token 3.
        String stop = texts[1].substring(texts[1].length() - 1) + texts[2] + texts[3].substring(0, 1);
        Generation generation = new Generation(PROMPT, params(20, stop), tokenizer, EOS);
        List<TokenOutput> outputs = follow(generation, ids);
        assertEquals(4, outputs.size(), "stops at the token that completes the stop string");
        assertEquals(FinishReason.STOP, outputs.getLast().finish());
        String expected = texts[0] + texts[1].substring(0, texts[1].length() - 1);
        assertEquals(expected, generation.text());
        assertEquals(texts[0] + "|" + texts[1].substring(0, texts[1].length() - 1) + "||", pieces(outputs));
    }

    @Test
    void aPartialStopMatchIsReleasedWhenItFails() {
        int[] ids = tokenizer.encode(" one two three");
        String[] texts = Arrays.stream(ids).mapToObj(id -> tokenizer.decode(new int[]{id})).toArray(String[]::new);
        String stop = texts[0] + "@@";
        Generation generation = new Generation(PROMPT, params(ids.length, stop), tokenizer, EOS);
        List<TokenOutput> outputs = follow(generation, ids);
        assertEquals("", outputs.getFirst().text(), "could be the start of the stop string");
        assertEquals(texts[0] + texts[1], outputs.get(1).text());
        assertEquals(FinishReason.LENGTH, outputs.getLast().finish());
        assertEquals(" one two three", generation.text());
    }

    @Test
    void heldTextIsReleasedAtTheEnd() {
        int[] ids = tokenizer.encode(" one two");
        Generation generation = new Generation(PROMPT, params(ids.length, " two and"), tokenizer, EOS);
        List<TokenOutput> outputs = follow(generation, ids);
        assertEquals(FinishReason.LENGTH, outputs.getLast().finish());
        assertEquals(" one two", generation.text(), "' two' could start the stop string until the length limit");
    }

    @Test
    void logprobsAreReportedWhenAskedFor() {
        Generation generation = new Generation(PROMPT, params(3).withLogprobs(2), tokenizer, EOS);
        TokenOutput output = generation.next(pointingAt(500));
        assertEquals(500, output.tokenId(), "ids past the tokenizer's vocabulary are never chosen");
        assertEquals(0, output.logprob(), 1e-6, "all the sampleable probability is on id 500");
        assertEquals(2, output.topLogprobs().size());
        assertEquals(500, output.topLogprobs().getFirst().token());
    }

    @Test
    void aTokenPickedOnTheDeviceGoesThroughTheSameStopsAndText() {
        int[] ids = tokenizer.encode(" one two three");
        Generation byLogits = new Generation(PROMPT, params(10, " three"), tokenizer, EOS);
        Generation byDevice = new Generation(PROMPT, params(10, " three"), tokenizer, EOS);
        List<TokenOutput> expected = follow(byLogits, ids);
        List<TokenOutput> got = new ArrayList<>();
        for (int id : ids) {
            got.add(byDevice.next(id));
            if (got.getLast().finished()) break;
        }
        assertEquals(pieces(expected), pieces(got));
        assertEquals(FinishReason.STOP, byDevice.finishReason());
        assertEquals(byLogits.text(), byDevice.text());
        assertThrows(IllegalStateException.class, () -> byDevice.next(ids[0]));
    }

    @Test
    void theDeviceMayPickOnlyWithoutPenaltiesMinPOrLogprobs() {
        SamplingParams sampled = SamplingParams.defaults().withTemperature(0.7).withTopP(0.9).withTopK(40).withSeed(5L);
        var choice = new Generation(PROMPT, GenerationParams.of(4, sampled), tokenizer, EOS).deviceChoice();
        assertNotNull(choice);
        assertEquals(0.7f, choice.temperature());
        assertEquals(0.9f, choice.topP());
        assertEquals(40, choice.topK());
        assertEquals(tokenizer.vocabSize(), choice.vocabLimit(), "never an id the tokenizer lacks");
        assertEquals(choice.seed(), new Generation(PROMPT, GenerationParams.of(4, sampled), tokenizer, EOS)
                .deviceChoice().seed(), "a seed gives the same draws");
        assertTrue(new Generation(PROMPT, params(4), tokenizer, EOS).deviceChoice().isGreedy());
        for (GenerationParams hostOnly : List.of(GenerationParams.of(4, sampled.withPresencePenalty(0.5)),
                GenerationParams.of(4, sampled.withFrequencyPenalty(0.5)),
                GenerationParams.of(4, sampled.withRepetitionPenalty(1.2)),
                GenerationParams.of(4, sampled.withMinP(0.1)), GenerationParams.of(4, sampled).withLogprobs(1))) {
            assertNull(new Generation(PROMPT, hostOnly, tokenizer, EOS).deviceChoice(), hostOnly.toString());
        }
    }

    @Test
    void anEmptyPromptIsRefused() {
        assertThrows(IllegalArgumentException.class, () -> new Generation(new int[0], params(1), tokenizer, EOS));
    }
}
