package io.dejavu.engine.cpu;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/** A golden/*-reference.json file: transformers' outputs for a few prompts. */
record GoldenReference(String model, List<Case> cases) {

    record Case(String prompt, int[] inputIds, float[] lastLogits, int[][] top5Ids, int[] greedyIds) {
    }

    static Path shared() {
        return Path.of(System.getProperty("dejavu.shared", "../shared"));
    }

    static GoldenReference read(Path file) {
        JsonNode root;
        try {
            root = new ObjectMapper().readTree(file.toFile());
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        List<Case> cases = new ArrayList<>();
        for (JsonNode c : root.get("cases")) {
            JsonNode top5 = c.get("top5_ids");
            int[][] top5Ids = new int[top5.size()][];
            for (int i = 0; i < top5Ids.length; i++) top5Ids[i] = ints(top5.get(i));
            JsonNode logits = c.get("last_logits");
            float[] last = new float[logits.size()];
            for (int i = 0; i < last.length; i++) last[i] = (float) logits.get(i).asDouble();
            cases.add(new Case(c.get("prompt").asText(), ints(c.get("input_ids")), last, top5Ids,
                    ints(c.get("greedy_ids"))));
        }
        return new GoldenReference(root.get("model").asText(), List.copyOf(cases));
    }

    private static int[] ints(JsonNode array) {
        int[] out = new int[array.size()];
        for (int i = 0; i < out.length; i++) out[i] = array.get(i).asInt();
        return out;
    }

    static double relativeL2(float[] actual, float[] expected) {
        double diff = 0, norm = 0;
        for (int i = 0; i < expected.length; i++) {
            double d = actual[i] - expected[i];
            diff += d * d;
            norm += (double) expected[i] * expected[i];
        }
        return Math.sqrt(diff / norm);
    }

    static int argmax(float[] x) {
        int best = 0;
        for (int i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
        return best;
    }

    /** Indices of the k largest values, largest first. */
    static int[] topK(float[] x, int k) {
        int[] top = new int[k];
        boolean[] taken = new boolean[x.length];
        for (int j = 0; j < k; j++) {
            int best = -1;
            for (int i = 0; i < x.length; i++) if (!taken[i] && (best < 0 || x[i] > x[best])) best = i;
            taken[best] = true;
            top[j] = best;
        }
        return top;
    }
}
