package io.dejavu.cli;

import io.dejavu.generation.GenerationParams;
import io.dejavu.sampling.SamplingParams;
import picocli.CommandLine.Option;

import java.util.ArrayList;
import java.util.List;

/** Generation options shared by the commands that generate text; defaults are the API's (OpenAI's). */
public final class SamplingOptions {
    private static final SamplingParams DEFAULTS = SamplingParams.defaults();

    @Option(names = "--max-tokens", paramLabel = "N", description = "Most tokens to generate (default: ${DEFAULT-VALUE}).")
    int maxTokens = 64;
    @Option(names = "--temperature", paramLabel = "T", description = "0 = greedy; range [0, 2] (default: 1).")
    double temperature = DEFAULTS.temperature();
    @Option(names = "--top-p", paramLabel = "P", description = "Nucleus sampling, (0, 1] (default: 1 = off).")
    double topP = DEFAULTS.topP();
    @Option(names = "--top-k", paramLabel = "K", description = "Keep the K most probable tokens (default: 0 = off).")
    int topK = DEFAULTS.topK();
    @Option(names = "--min-p", paramLabel = "P", description = "Drop tokens below P x the top probability (default: 0 = off).")
    double minP = DEFAULTS.minP();
    @Option(names = "--repetition-penalty", paramLabel = "R", description = "Hugging Face repetition penalty (default: 1 = off).")
    double repetitionPenalty = DEFAULTS.repetitionPenalty();
    @Option(names = "--presence-penalty", paramLabel = "X", description = "OpenAI presence penalty, [-2, 2] (default: 0).")
    double presencePenalty = DEFAULTS.presencePenalty();
    @Option(names = "--frequency-penalty", paramLabel = "X", description = "OpenAI frequency penalty, [-2, 2] (default: 0).")
    double frequencyPenalty = DEFAULTS.frequencyPenalty();
    @Option(names = "--seed", paramLabel = "S", description = "Seed: the same seed gives the same output.")
    Long seed;
    @Option(names = "--stop", paramLabel = "TEXT", description = "Stop sequence (repeatable, at most 4).")
    List<String> stop = new ArrayList<>();

    /** The validated parameters; an invalid value throws IllegalArgumentException naming it. */
    public GenerationParams toParams() {
        SamplingParams sampling = new SamplingParams(temperature, topP, topK, minP, repetitionPenalty,
                presencePenalty, frequencyPenalty, seed);
        return new GenerationParams(maxTokens, stop, sampling, false, 0);
    }
}
