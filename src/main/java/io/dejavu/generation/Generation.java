package io.dejavu.generation;

import io.dejavu.engine.TokenChoice;
import io.dejavu.sampling.SampleResult;
import io.dejavu.sampling.Sampler;
import io.dejavu.sampling.SamplingParams;
import io.dejavu.sampling.TokenLogprob;
import io.dejavu.tokenizer.StreamingDecoder;
import io.dejavu.tokenizer.Tokenizer;

import java.util.Arrays;
import java.util.List;
import java.util.concurrent.ThreadLocalRandom;

/**
 * One request's generation state, independent of how the forward passes are run: given each step's logits it picks
 * the next token (or takes the one an engine picked on its device), decodes it, watches for stop sequences and the
 * token budget, and says what text may be shown.
 * Not thread-safe.
 */
public final class Generation {
    private final int[] promptIds;
    private final GenerationParams params;
    private final int eosId;
    private final Sampler sampler;
    private final StreamingDecoder decoder;
    private final StopSequenceBuffer stops;
    private final StringBuilder text = new StringBuilder();
    private int[] generatedIds = new int[16];
    private int generatedCount;
    private FinishReason finishReason;
    private final TokenChoice deviceChoice;

    /**
     * @param promptIds the prompt as the model sees it (with OPT's leading id 2)
     * @param eosId     the token that ends generation; it is never shown as text
     */
    public Generation(int[] promptIds, GenerationParams params, Tokenizer tokenizer, int eosId) {
        if (promptIds.length == 0) throw new IllegalArgumentException("the prompt has no tokens");
        this.promptIds = promptIds.clone();
        this.params = params;
        this.eosId = eosId;
        this.sampler = new Sampler(params.sampling(), tokenizer.vocabSize());
        sampler.observePrompt(promptIds);
        this.decoder = tokenizer.streamingDecoder();
        this.stops = new StopSequenceBuffer(params.stop());
        this.deviceChoice = deviceChoice(params, tokenizer.vocabSize());
    }

    private static TokenChoice deviceChoice(GenerationParams params, int vocabLimit) {
        SamplingParams s = params.sampling();
        if (params.logprobs() || s.minP() > 0 || s.penalized()) return null;
        // Without a seed each request draws differently, as the host's sampler does.
        long seed = s.seed() != null ? s.seed() : ThreadLocalRandom.current().nextLong();
        return new TokenChoice((float) s.temperature(), (float) s.topP(), s.topK(), (int) (seed ^ (seed >>> 32)),
                vocabLimit);
    }

    /** Picks the token that follows, given the logits of the last token so far. */
    public TokenOutput next(float[] logits) {
        requireRunning();
        if (params.logprobs()) {
            SampleResult sampled = sampler.sample(logits, params.topLogprobs());
            return accept(sampled.token(), sampled.logprob(), sampled.top());
        }
        return accept(sampler.sample(logits), Double.NaN, List.of());
    }

    /**
     * Takes the token that follows as the engine picked it on its device, by {@link #deviceChoice} (no logits came
     * back to the host).
     */
    public TokenOutput next(int token) {
        requireRunning();
        return accept(token, Double.NaN, List.of());
    }

    /**
     * How an engine that samples on its device may pick this generation's tokens: temperature, top-k and top-p with
     * this generation's seed, below the tokenizer's vocabulary. Null where only the host's sampler can: penalties
     * and min-p change the logits by the token history, and log-probabilities need the logits themselves.
     */
    public TokenChoice deviceChoice() {
        return deviceChoice;
    }

    private void requireRunning() {
        if (finishReason != null) {
            throw new IllegalStateException("the generation has already finished (" + finishReason + ")");
        }
    }

    private TokenOutput accept(int token, double logprob, List<TokenLogprob> top) {
        sampler.observe(token);
        if (generatedCount == generatedIds.length) generatedIds = Arrays.copyOf(generatedIds, 2 * generatedCount);
        generatedIds[generatedCount++] = token;

        String shown;
        if (token == eosId) {
            shown = remainingText();
            finishReason = FinishReason.STOP;
        } else {
            shown = stops.append(decoder.append(token));
            if (stops.stopped()) {
                finishReason = FinishReason.STOP;
            } else if (generatedCount >= params.maxTokens()) {
                shown += remainingText();
                finishReason = stops.stopped() ? FinishReason.STOP : FinishReason.LENGTH;
            }
        }
        text.append(shown);
        return new TokenOutput(token, shown, finishReason, logprob, top);
    }

    /** At the end: what the decoder and the stop-sequence watch still hold. */
    private String remainingText() {
        String tail = stops.append(decoder.flush());
        return stops.stopped() ? tail : tail + stops.release();
    }

    public int[] promptIds() {
        return promptIds.clone();
    }

    public GenerationParams params() {
        return params;
    }

    /** Tokens generated so far, the end-of-sequence token included (OpenAI's completion_tokens). */
    public int generatedCount() {
        return generatedCount;
    }

    public int[] generatedIds() {
        return Arrays.copyOf(generatedIds, generatedCount);
    }

    /** All text shown so far. */
    public String text() {
        return text.toString();
    }

    public boolean finished() {
        return finishReason != null;
    }

    /** Why it ended, or null while it goes on. */
    public FinishReason finishReason() {
        return finishReason;
    }
}
