package io.dejavu.cli;

import io.dejavu.engine.cuda.CudaBenchmark;
import io.dejavu.engine.cuda.CudaEngine;
import io.dejavu.engine.cuda.SparseBenchmark;
import io.dejavu.model.ModelLoadException;
import io.dejavu.model.OptConfig;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.Callable;

/** Decode and prefill speed of the CUDA backend on random weights of a model's shapes, against the bandwidth floor. */
@Command(name = "gpu-bench", mixinStandardHelpOptions = true,
        description = "Benchmark the CUDA backend: random fp16 weights made on the GPU for a named OPT shape or a "
                + "model directory's config.json; reports prefill time, ms/token, tokens/s, achieved GB/s and the "
                + "memory-bandwidth floor.")
public final class GpuBenchCommand implements Callable<Integer> {
    @Option(names = "--shape", required = true, description = "opt-1.3b, opt-6.7b, opt-13b, ... or a model directory")
    String shape;

    @Option(names = "--batch", split = ",", defaultValue = "1",
            description = "sequences decoded together, one or a list (default ${DEFAULT-VALUE})")
    List<Integer> batches;

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

    @Option(names = "--sparse", description = "Deja Vu: decode with random predictors next to dense decode, same run")
    boolean sparse;

    @Option(names = "--mlp-keep", defaultValue = "0.1", description = "with --sparse: share of MLP neurons a token keeps (default ${DEFAULT-VALUE})")
    double mlpKeep;

    @Option(names = "--heads-keep", defaultValue = "0.5", description = "with --sparse: share of heads a token keeps (default ${DEFAULT-VALUE})")
    double headsKeep;

    @Option(names = "--rank", description = "with --sparse: predictor rank (default: hidden / 8)")
    Integer rank;

    @Option(names = "--sweep", description = "with --sparse: also batch 1 at other shares kept (ms/token against share kept)")
    boolean sweep;

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
        if (batches.stream().anyMatch(b -> b < 1)) {
            System.err.println("error: --batch sizes must be at least 1");
            return 2;
        }
        if (sparse && !(mlpKeep > 0 && mlpKeep <= 1 && headsKeep > 0 && headsKeep <= 1)) {
            System.err.println("error: --mlp-keep and --heads-keep must be in (0, 1]");
            return 2;
        }
        try {
            if (sparse) {
                int r = rank != null ? rank : config.hiddenSize() / 8;
                List<SparseBenchmark.Point> points = SparseBenchmark.run(shape, config,
                        batches.stream().mapToInt(Integer::intValue).toArray(), promptLen, genLen, r, mlpKeep, headsKeep,
                        sweep, profile, seed, System.out);
                for (SparseBenchmark.Point p : points) System.out.println(p.result(shape, r));
                return 0;
            }
            for (int batch : batches) {
                System.out.print(CudaBenchmark.run(shape, config, batch, promptLen, genLen, seed, profile,
                        dependentLaunch).table());
            }
            return 0;
        } catch (IllegalArgumentException | io.dejavu.engine.cuda.GpuOutOfMemoryException e) {
            System.err.println("error: " + e.getMessage());
            return 2;
        }
    }
}
