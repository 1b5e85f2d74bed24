package io.dejavu.engine.cuda;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.dejavu.model.OptModel;

import java.io.IOException;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/** Shared helpers of the GPU tests: skip where CUDA cannot run, open golden models, compare logits. */
final class Gpu {
    private Gpu() {
    }

    static void assumeCuda() {
        String reason = CudaEngine.unavailableReason();
        assumeTrue(reason == null, () -> "no CUDA here: " + reason);
    }

    static Path shared() {
        return Path.of(System.getProperty("dejavu.shared", "../shared"));
    }

    static Path golden(String name) {
        return shared().resolve("golden").resolve(name);
    }

    static JsonNode reference(String model) throws IOException {
        return new ObjectMapper().readTree(golden(model + "-reference.json").toFile());
    }

    /** A small engine for tests: poisoned scratch buffers, a 64 MiB KV cache. */
    static CudaEngine engine(OptModel model, CudaEngine.Options options) {
        return CudaEngine.load(model, options.withKvCacheBytes(64L << 20).withPoison(true));
    }

    static CudaEngine engine(OptModel model) {
        return engine(model, CudaEngine.Options.defaults());
    }

    static int[] ints(JsonNode array) {
        int[] out = new int[array.size()];
        for (int i = 0; i < out.length; i++) out[i] = array.get(i).asInt();
        return out;
    }

    static float[] floats(JsonNode array) {
        float[] out = new float[array.size()];
        for (int i = 0; i < out.length; i++) out[i] = (float) array.get(i).asDouble();
        return out;
    }

    /** ||a - b|| / ||b||. */
    static double relL2(float[] a, float[] b) {
        assertEquals(b.length, a.length, "lengths");
        double num = 0, den = 0;
        for (int i = 0; i < a.length; i++) {
            double d = (double) a[i] - b[i];
            num += d * d;
            den += (double) b[i] * b[i];
        }
        return Math.sqrt(num / den);
    }

    static int argmax(float[] a) {
        int best = 0;
        for (int i = 1; i < a.length; i++) if (a[i] > a[best]) best = i;
        return best;
    }
}
