package io.dejavu.engine.cuda;

import io.dejavu.engine.Engine;
import io.dejavu.engine.Sequence;
import io.dejavu.engine.Step;
import io.dejavu.engine.cpu.CpuEngine;
import io.dejavu.model.OptModel;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The CUDA engine against the CPU engine on a seeded random model with opt-mini's shapes (hidden 512, 6 layers,
 * 8 heads, ffn 2048, vocab 16384): a 40-token prompt, then 64 greedy decode steps fed the CPU's choices.
 */
class CudaVersusCpuEngineTest {
    @BeforeEach
    void cuda() {
        Gpu.assumeCuda();
    }

    @Test
    void logitsMatchTheCpuEngineOver64DecodeSteps(@TempDir Path dir) throws Exception {
        RandomOptCheckpoint.write(dir, 512, 6, 8, 2048, 16384, 1024, 42);
        Random random = new Random(3);
        int[] prompt = new int[40];
        prompt[0] = 2;
        for (int i = 1; i < prompt.length; i++) prompt[i] = 4 + random.nextInt(16380);
        int steps = 64, argmaxEqual = 0;
        double worst = 0;
        try (OptModel model = OptModel.load(dir);
             Engine cpu = new CpuEngine(model);
             CudaEngine gpu = Gpu.engine(model);
             Sequence c = cpu.newSequence();
             Sequence g = gpu.newSequence()) {
            float[] want = cpu.forward(List.of(Step.last(c, prompt))).get(0)[0];
            float[] got = gpu.forward(List.of(Step.last(g, prompt))).get(0)[0];
            for (int step = 0; step <= steps; step++) {
                double err = Gpu.relL2(got, want);
                worst = Math.max(worst, err);
                assertTrue(err <= 5e-3, "step " + step + ": rel L2 " + err);
                int next = Gpu.argmax(want);
                if (Gpu.argmax(got) == next) argmaxEqual++;
                if (step == steps) break;
                want = cpu.forward(List.of(Step.last(c, next))).get(0)[0];
                got = gpu.forward(List.of(Step.last(g, next))).get(0)[0];
            }
        }
        System.out.printf("GPU vs CPU: worst rel L2 %.2e, argmax equal %d/%d%n", worst, argmaxEqual, steps + 1);
        assertTrue(argmaxEqual >= 0.99 * (steps + 1), argmaxEqual + " of " + (steps + 1) + " argmax equal");
    }
}
