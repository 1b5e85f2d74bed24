package io.dejavu.generation;

import io.dejavu.engine.Engine;
import io.dejavu.engine.Sequence;
import io.dejavu.engine.Step;
import io.dejavu.model.OptConfig;
import io.dejavu.sampling.SamplingParams;
import io.dejavu.tokenizer.Tokenizer;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import static org.junit.jupiter.api.Assertions.*;

/**
 * How the generator drives an engine: one prefill step with the whole prompt, then one decode step per token with
 * the token just produced, and the sequence closed at the end. The engine here replays a fixed continuation and
 * records what it is asked; the model's own numbers are the CPU engine's tests' business.
 */
class GeneratorTest {
    private static final Path MODEL = Path.of("models/opt-demo");
    private static Tokenizer tokenizer;
    private static OptConfig config;

    @BeforeAll
    static void load() {
        tokenizer = Tokenizer.load(MODEL);
        config = OptConfig.read(MODEL);
    }

    /** Answers every step with logits whose argmax is the next token of the script, then end-of-sequence. */
    private static final class ReplayEngine implements Engine {
        private final OptConfig config;
        private final int[] script;
        final List<int[]> steps = new ArrayList<>();
        final List<ReplaySequence> sequences = new ArrayList<>();

        ReplayEngine(OptConfig config, int[] script) {
            this.config = config;
            this.script = script;
        }

        @Override
        public OptConfig config() {
            return config;
        }

        @Override
        public String backend() {
            return "replay";
        }

        @Override
        public Sequence newSequence() {
            ReplaySequence sequence = new ReplaySequence();
            sequences.add(sequence);
            return sequence;
        }

        @Override
        public List<float[][]> forward(List<Step> batch) {
            assertEquals(1, batch.size(), "the generator runs one sequence");
            Step step = batch.getFirst();
            ReplaySequence sequence = (ReplaySequence) step.sequence();
            assertFalse(sequence.closed);
            assertFalse(step.allLogits());
            steps.add(step.tokens().clone());
            sequence.length += step.tokens().length;
            int produced = steps.size() - 1;
            float[] logits = new float[config.vocabSize()];
            logits[produced < script.length ? script[produced] : config.eosTokenId()] = 10;
            return List.<float[][]>of(new float[][]{logits});
        }

        @Override
        public void close() {
        }
    }

    private static final class ReplaySequence implements Sequence {
        int length;
        boolean closed;

        @Override
        public int length() {
            return length;
        }

        @Override
        public void close() {
            closed = true;
        }
    }

    @Test
    void prefillsThePromptThenFeedsBackEachTokenAndClosesTheSequence() {
        int[] prompt = {2, 538, 846};
        int[] script = tokenizer.encode(" the king said");
        ReplayEngine engine = new ReplayEngine(config, script);
        List<TokenOutput> streamed = new ArrayList<>();
        Generation generation = new Generator(engine, tokenizer)
                .generate(prompt, GenerationParams.of(50, SamplingParams.greedy()), streamed::add);

        assertEquals(FinishReason.STOP, generation.finishReason(), "ended by the end-of-sequence token");
        assertEquals(" the king said", generation.text());
        assertEquals(script.length + 1, streamed.size());
        assertArrayEquals(prompt, engine.steps.getFirst());
        for (int i = 1; i < engine.steps.size(); i++) {
            assertArrayEquals(new int[]{script[i - 1]}, engine.steps.get(i), "decode step " + i);
        }
        assertEquals(script.length + 1, engine.steps.size(), "no step after the end-of-sequence token");
        assertEquals(1, engine.sequences.size());
        assertTrue(engine.sequences.getFirst().closed);
    }

    @Test
    void capsMaxTokensToTheContextAndRefusesAPromptThatFillsIt() {
        OptConfig small = new OptConfig(config.hiddenSize(), config.numHiddenLayers(), config.numAttentionHeads(),
                config.ffnDim(), config.vocabSize(), 8, config.wordEmbedProjDim(), config.doLayerNormBefore(),
                config.enableBias(), config.layerNormElementwiseAffine(), config.removeFinalLayerNorm(),
                config.activationFunction(), config.tieWordEmbeddings(), config.bosTokenId(), config.eosTokenId(),
                config.padTokenId());
        int[] script = new int[20];
        Arrays.fill(script, 538);
        ReplayEngine engine = new ReplayEngine(small, script);
        Generator generator = new Generator(engine, tokenizer);
        Generation generation = generator.generate(new int[]{2, 538, 846}, GenerationParams.of(100, SamplingParams.greedy()),
                output -> { });
        assertEquals(FinishReason.LENGTH, generation.finishReason());
        assertEquals(5, generation.generatedCount(), "prompt 3 + output 5 = the context of 8");
        assertTrue(engine.sequences.getFirst().length() <= 8);

        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> generator.generate(new int[8], GenerationParams.of(1, SamplingParams.greedy()), output -> { }));
        assertEquals("the prompt has 8 tokens; the model's context of 8 positions leaves no room to generate",
                e.getMessage());
    }
}
