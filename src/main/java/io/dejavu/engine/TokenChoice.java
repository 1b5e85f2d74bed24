package io.dejavu.engine;

import java.util.Arrays;

/**
 * How {@link Engine#nextTokens} picks a step's next token from its last logits: temperature 0 = argmax (lowest id
 * on ties); otherwise keep the {@code topK} largest logits (0 = all), of those the smallest set whose probability
 * reaches {@code topP}, and draw from the renormalised softmax(logits / temperature) by Gumbel-max with noise from
 * {@code seed} and the token's position (so a draw is reproducible and differs from step to step). Only ids below
 * {@code vocabLimit} are candidates (0 = the whole row): a model's embedding is often padded past its tokenizer's
 * vocabulary, and an id the tokenizer lacks cannot be shown. The CUDA backend runs this on the GPU; {@link #pick} is
 * the same rule on the host.
 */
public record TokenChoice(float temperature, float topP, int topK, int seed, int vocabLimit) {
    public TokenChoice {
        if (!(temperature >= 0)) throw new IllegalArgumentException("temperature must be >= 0, got " + temperature);
        if (!(topP > 0 && topP <= 1)) throw new IllegalArgumentException("topP must be in (0, 1], got " + topP);
        if (topK < 0) throw new IllegalArgumentException("topK must be >= 0 (0 = off), got " + topK);
        if (vocabLimit < 0) throw new IllegalArgumentException("vocabLimit must be >= 0 (0 = all), got " + vocabLimit);
    }

    /** Every id of the row a candidate. */
    public TokenChoice(float temperature, float topP, int topK, int seed) {
        this(temperature, topP, topK, seed, 0);
    }

    public static TokenChoice greedy() {
        return new TokenChoice(0, 1, 0, 0);
    }

    public boolean isGreedy() {
        return temperature == 0;
    }

    /** The seed of the draw for the token at {@code position}. */
    public int drawSeed(int position) {
        return seed * 0x9E3779B9 + position;
    }

    /** The host version of the rule, over one row of logits, for the token that follows {@code position}. */
    public int pick(float[] row, int position) {
        float[] logits = vocabLimit > 0 && vocabLimit < row.length ? Arrays.copyOf(row, vocabLimit) : row;
        int best = 0;
        if (isGreedy()) {
            for (int i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
            return best;
        }
        float max = Float.NEGATIVE_INFINITY;
        for (float l : logits) max = Math.max(max, l);
        float kThreshold = Float.NEGATIVE_INFINITY;
        if (topK > 0 && topK < logits.length) {
            float[] sorted = logits.clone();
            Arrays.sort(sorted);
            kThreshold = sorted[sorted.length - topK];
        }
        double z = 0;
        for (float l : logits) if (l >= kThreshold) z += Math.exp((l - max) / temperature);
        float pThreshold = 0;
        if (topP < 1) {
            double[] p = new double[logits.length];
            int n = 0;
            for (float l : logits) if (l >= kThreshold) p[n++] = Math.exp((l - max) / temperature);
            double[] kept = Arrays.copyOf(p, n);
            Arrays.sort(kept);
            double mass = 0;
            for (int i = n - 1; i >= 0; i--) {
                mass += kept[i];
                if (mass >= topP * z) { pThreshold = (float) kept[i]; break; }
            }
        }
        int seedBits = drawSeed(position);
        double bestKey = Double.NEGATIVE_INFINITY;
        for (int i = 0; i < logits.length; i++) {
            double lp = (logits[i] - max) / temperature;
            if (logits[i] < kThreshold || Math.exp(lp) < pThreshold) continue;
            double key = lp - Math.log(-Math.log(uniform(seedBits, i)));
            if (key > bestKey) { bestKey = key; best = i; }
        }
        return best;
    }

    /** The same hash as decoder.cu's uniform01: a float in (0, 1) from a seed and a token id. */
    static float uniform(int seed, int i) {
        int h = seed * 0x9E3779B1 ^ (i + 0x7F4A7C15) * 0x85EBCA77;
        h ^= h >>> 16; h *= 0x7FEB352D; h ^= h >>> 15; h *= 0x846CA68B; h ^= h >>> 16;
        return ((h >>> 8) + 0.5f) * (1.0f / 16777216.0f);
    }
}
