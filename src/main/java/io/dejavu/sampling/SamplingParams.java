package io.dejavu.sampling;

/**
 * How the next token is chosen from the logits. Defaults are OpenAI's: temperature 1, every filter and penalty off,
 * no seed. Temperature 0 means greedy decoding (argmax); the other filters then do not matter.
 *
 * @param temperature       divides the logits; 0 = greedy. Range [0, 2] as in the OpenAI API.
 * @param topP              nucleus sampling: keep the most probable tokens whose probabilities sum to at least topP;
 *                          1 = off. Range (0, 1].
 * @param topK              keep only the topK most probable tokens; 0 = off.
 * @param minP              drop tokens whose probability is below minP times the most probable one's; 0 = off.
 *                          Range [0, 1].
 * @param repetitionPenalty Hugging Face semantics over prompt and output tokens: a positive logit is divided by it, a
 *                          negative one multiplied; 1 = off. Must be > 0.
 * @param presencePenalty   OpenAI semantics over generated tokens: subtracted once from the logit of every token
 *                          generated so far. Range [-2, 2].
 * @param frequencyPenalty  OpenAI semantics over generated tokens: subtracted once per occurrence. Range [-2, 2].
 * @param seed              seeds the random generator so that a request is reproducible; null = a fresh random seed
 */
public record SamplingParams(double temperature, double topP, int topK, double minP, double repetitionPenalty,
                             double presencePenalty, double frequencyPenalty, Long seed) {

    private static final SamplingParams DEFAULTS = new SamplingParams(1.0, 1.0, 0, 0.0, 1.0, 0.0, 0.0, null);

    public SamplingParams {
        requireIn("temperature", temperature, 0, 2, "[0, 2]");
        if (!(topP > 0 && topP <= 1)) throw invalid("top_p", topP, "(0, 1]");
        if (topK < 0) throw invalid("top_k", topK, ">= 0 (0 = off)");
        requireIn("min_p", minP, 0, 1, "[0, 1]");
        if (!(repetitionPenalty > 0 && Double.isFinite(repetitionPenalty))) {
            throw invalid("repetition_penalty", repetitionPenalty, "> 0 (1 = off)");
        }
        requireIn("presence_penalty", presencePenalty, -2, 2, "[-2, 2]");
        requireIn("frequency_penalty", frequencyPenalty, -2, 2, "[-2, 2]");
    }

    /** OpenAI's defaults: temperature 1, no filters, no penalties, no seed. */
    public static SamplingParams defaults() {
        return DEFAULTS;
    }

    /** Deterministic argmax decoding. */
    public static SamplingParams greedy() {
        return DEFAULTS.withTemperature(0);
    }

    public boolean isGreedy() {
        return temperature == 0;
    }

    /** Whether any penalty changes the logits by the token history (repetition, presence or frequency). */
    public boolean penalized() {
        return repetitionPenalty != 1 || presencePenalty != 0 || frequencyPenalty != 0;
    }

    public SamplingParams withTemperature(double value) {
        return new SamplingParams(value, topP, topK, minP, repetitionPenalty, presencePenalty, frequencyPenalty, seed);
    }

    public SamplingParams withTopP(double value) {
        return new SamplingParams(temperature, value, topK, minP, repetitionPenalty, presencePenalty, frequencyPenalty, seed);
    }

    public SamplingParams withTopK(int value) {
        return new SamplingParams(temperature, topP, value, minP, repetitionPenalty, presencePenalty, frequencyPenalty, seed);
    }

    public SamplingParams withMinP(double value) {
        return new SamplingParams(temperature, topP, topK, value, repetitionPenalty, presencePenalty, frequencyPenalty, seed);
    }

    public SamplingParams withRepetitionPenalty(double value) {
        return new SamplingParams(temperature, topP, topK, minP, value, presencePenalty, frequencyPenalty, seed);
    }

    public SamplingParams withPresencePenalty(double value) {
        return new SamplingParams(temperature, topP, topK, minP, repetitionPenalty, value, frequencyPenalty, seed);
    }

    public SamplingParams withFrequencyPenalty(double value) {
        return new SamplingParams(temperature, topP, topK, minP, repetitionPenalty, presencePenalty, value, seed);
    }

    public SamplingParams withSeed(Long value) {
        return new SamplingParams(temperature, topP, topK, minP, repetitionPenalty, presencePenalty, frequencyPenalty, value);
    }

    private static void requireIn(String name, double value, double min, double max, String range) {
        // Written so that NaN fails too.
        if (!(value >= min && value <= max)) throw invalid(name, value, range);
    }

    private static IllegalArgumentException invalid(String name, Object value, String range) {
        return new IllegalArgumentException(name + " = " + value + " is out of range: must be " + range);
    }
}
