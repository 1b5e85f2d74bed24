package io.dejavu.cli;

import io.dejavu.engine.cuda.CudaBenchmark;
import io.dejavu.engine.cuda.CudaEngine;
import io.dejavu.model.ModelLoadException;
import io.dejavu.model.OptConfig;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.nio.file.Path;
import java.util.concurrent.Callable;

/** Decode and prefill speed of the CUDA backend on random weights of a model's shapes, against the bandwidth floor. */
@Command(name = "gpu-bench", mixinStandardHelpOptions = true,
        description = "Benchmark the CUDA backend: random fp16 weights made on the GPU for a named OPT shape or a "
                + "model directory's config.json; reports prefill time, ms/token, tokens/s, achieved GB/s and the "
                + "memory-bandwidth floor.")
public final class GpuBenchCommand implements Callable<Integer> {
    @Option(names = "--shape", required = true, description = "opt-1.3b, opt-6.7b, opt-13b, ... or a model directory")
    String shape;

    @Option(names = "--batch", defaultValue = "1", description = "sequences decoded together (default ${DEFAULT-VALUE})")
    int batch;

    @Option(names = "--prompt-len", defaultValue = "512", description = "prompt tokens (default ${DEFAULT-VALUE})")
    int promptLen;

    @Option(names = "--gen-len", defaultValue = "128", description = "decode steps timed (default ${DEFAULT-VALUE})")
    int genLen;

    @Option(names = "--seed", defaultValue = "1", description = "seed of the random weights and prompts")
    int seed;

    @Option(names = "--profile", description = "also time each kernel of one decode step and one prefill")
    boolean profile;

    @Option(names = "--dependent-launch", description = "launch kernels with programmatic dependent launch (Hopper)")
    boolean dependentLaunch;

    @Override
    public Integer call() {
        String unavailable = CudaEngine.unavailableReason();
        if (unavailable != null) {
            System.err.println("error: the cuda backend is not available: " + unavailable);
            return 2;
        }
        OptConfig config = CudaBenchmark.namedShape(shape);
        if (config == null) {
            Path dir = Path.of(shape);
            try {
                config = OptConfig.read(dir);
            } catch (ModelLoadException e) {
                System.err.println("error: --shape " + shape + " is neither a named shape (" + CudaBenchmark.NAMED_SHAPES
                        + ") nor a model directory: " + e.getMessage());
                return 2;
            }
        }
        try {
            System.out.print(CudaBenchmark.run(shape, config, batch, promptLen, genLen, seed, profile, dependentLaunch).table());
            return 0;
        } catch (IllegalArgumentException | io.dejavu.engine.cuda.GpuOutOfMemoryException e) {
            System.err.println("error: " + e.getMessage());
            return 2;
        }
    }
}
