package io.dejavu.engine;

import io.dejavu.engine.cpu.CpuEngine;
import io.dejavu.engine.cuda.CudaEngine;
import io.dejavu.model.OptModel;
import io.dejavu.sparsity.Predictors;

/** Makes the engine the backend setting asks for: cpu, cuda, or auto (cuda when it is available, else cpu). */
public final class EngineFactory {
    private EngineFactory() {
    }

    /**
     * The backend to use: cpu or cuda as asked, or for auto cuda when available, else cpu.
     *
     * @throws IllegalStateException when cuda is asked for and cannot be used, with the reason
     */
    public static String resolve(String backend) {
        String missing = backend.equals("cpu") ? null : cudaMissingReason();
        return switch (backend) {
            case "cpu" -> "cpu";
            case "cuda" -> {
                if (missing != null) {
                    throw new IllegalStateException("backend cuda is not available here: " + missing
                            + "; use --backend cpu or auto");
                }
                yield "cuda";
            }
            case "auto" -> missing == null ? "cuda" : "cpu";
            default -> throw new IllegalArgumentException("unknown backend " + backend + " (cpu, cuda or auto)");
        };
    }

    /** What "auto" chose and why, for the start-up log. */
    public static String describe(String backend) {
        String resolved = resolve(backend);
        if (!backend.equals("auto")) return resolved;
        return resolved.equals("cuda") ? "cuda (auto)" : "cpu (auto: " + cudaMissingReason() + ")";
    }

    /**
     * Makes an engine for a backend name, the CPU engine's thread count (0 = one per core), the CUDA engine's KV cache
     * in MiB (0 = 90% of the GPU memory the weights leave) and a loaded model, able to run the predictors when they
     * are not null.
     */
    @FunctionalInterface
    public interface Maker {
        Engine create(String backend, int cpuThreads, int kvCacheMib, OptModel model, Predictors predictors);
    }

    /**
     * @throws IllegalStateException when cuda is asked for and cannot be used, with the reason
     */
    public static Engine create(String backend, OptModel model) {
        return create(backend, 0, 0, model, null);
    }

    /**
     * The engine, with Deja Vu sparse steps enabled when predictors are given.
     *
     * @param cpuThreads the CPU engine's threads, the calling one included; 0 = one per core
     * @param kvCacheMib the CUDA engine's KV cache pool; 0 = 90% of the GPU memory the weights leave
     * @throws IllegalStateException when cuda is asked for and cannot be used, with the reason
     */
    public static Engine create(String backend, int cpuThreads, int kvCacheMib, OptModel model, Predictors predictors) {
        return switch (resolve(backend)) {
            case "cpu" -> {
                CpuEngine cpu = cpuThreads > 0 ? new CpuEngine(model, cpuThreads) : new CpuEngine(model);
                if (predictors != null) cpu.attachPredictors(predictors);
                yield cpu;
            }
            case "cuda" -> CudaEngine.load(model, CudaEngine.Options.defaults().withKvCacheBytes(kvCacheMib * 1048576L),
                    predictors);
            default -> throw new IllegalStateException("unreachable: " + backend);
        };
    }

    /** Why the CUDA engine cannot be used, or null when it can. */
    private static String cudaMissingReason() {
        return CudaEngine.unavailableReason();
    }
}
