package io.dejavu.cli;

import io.dejavu.bench.MemoryBandwidth;
import io.dejavu.bench.RandomPrompts;
import io.dejavu.engine.Engine;
import io.dejavu.engine.Sequence;
import io.dejavu.engine.Step;
import io.dejavu.engine.cpu.CpuEngine;
import io.dejavu.model.OptModel;
import io.dejavu.model.OptWeights;
import io.dejavu.model.Tensor;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Objects;
import java.util.Random;
import java.util.concurrent.Callable;
import java.util.stream.Stream;

/**
 * Decode throughput next to its floor: batch-1 decode is memory-bound, so a step cannot be faster than the weight
 * bytes it reads divided by the memory bandwidth, measured in the same run. The CPU engine runs a model; the CUDA
 * engine runs random weights of a named shape ({@link GpuBench}), dense or with Deja Vu sparsity.
 */
@Command(name = "bench", mixinStandardHelpOptions = true,
        description = "Measure decode speed next to the memory-bandwidth floor: the CPU engine on a model, or the CUDA "
                + "engine on random weights of an OPT shape (dense, or --sparse next to dense).")
public final class BenchCommand implements Callable<Integer> {
    private static final long BANDWIDTH_BUFFER_BYTES = 1L << 30;

    @Option(names = "--backend", paramLabel = "NAME", defaultValue = "cpu", description = "cpu or cuda (default: ${DEFAULT-VALUE}).")
    String backend;

    @Mixin
    ModelOption model;

    @Option(names = "--batch", split = ",", paramLabel = "N", description = "Batch sizes (default: 1,8 on the cpu, 1 on cuda).")
    List<Integer> batches;

    @Option(names = "--gen-len", paramLabel = "N", defaultValue = "128", description = "Decode steps timed per batch size (default: ${DEFAULT-VALUE}).")
    int genLen;

    @Option(names = "--prompt-len", paramLabel = "N", description = "Prompt tokens prefilled before decoding (default: 32 on the cpu, 512 on cuda).")
    Integer promptLen;

    @Option(names = "--threads", paramLabel = "N", description = "cpu: threads (default: all available processors).")
    Integer threads;

    @Option(names = "--shape", paramLabel = "NAME|DIR", description = "cuda: opt-125m, opt-1.3b, opt-2.7b, opt-6.7b, opt-13b, opt-30b, or a model directory (its config.json).")
    String shape;

    @Option(names = "--seed", defaultValue = "1", description = "cuda: seed of the random weights and prompts (default: ${DEFAULT-VALUE}).")
    int seed;

    @Option(names = "--profile", description = "cuda: also time each kernel of one decode step (and one prefill).")
    boolean profile;

    @Option(names = "--no-dependent-launch", description = "cuda: plain launches only (by default each decode graph is also captured with programmatic dependent launch, and the faster kept).")
    boolean noDependentLaunch;

    @Option(names = "--sparse", description = "cuda: Deja Vu decoding with random predictors, next to dense decoding of the same engine.")
    boolean sparse;

    @Option(names = "--mlp-keep", defaultValue = "0.1", description = "with --sparse: share of MLP neurons a token keeps (default: ${DEFAULT-VALUE}).")
    double mlpKeep;

    @Option(names = "--heads-keep", defaultValue = "0.5", description = "with --sparse: share of heads a token keeps (default: ${DEFAULT-VALUE}).")
    double headsKeep;

    @Option(names = "--rank", description = "with --sparse: predictor rank (default: hidden / 8).")
    Integer rank;

    @Option(names = "--sweep", description = "with --sparse: also batch 1 at other shares kept (ms/token against the share kept).")
    boolean sweep;

    @Override
    public Integer call() {
        if (genLen < 1 || (promptLen != null && promptLen < 1)) {
            throw new IllegalArgumentException("--gen-len and --prompt-len must be at least 1");
        }
        if (batches != null && batches.stream().anyMatch(b -> b < 1)) {
            throw new IllegalArgumentException("--batch sizes must be at least 1");
        }
        if (backend.equals("cuda")) return GpuBench.run(this);
        if (!backend.equals("cpu")) throw new IllegalArgumentException("unknown --backend '" + backend + "' (cpu or cuda)");
        if (shape != null || sparse) throw new IllegalArgumentException("--shape and --sparse are for --backend cuda");
        List<Integer> batches = this.batches != null ? this.batches : List.of(1, 8);
        int promptLen = this.promptLen != null ? this.promptLen : 32;
        Path dir = model.directory();
        int threadCount = threads != null ? threads : Runtime.getRuntime().availableProcessors();
        try (OptModel m = OptModel.load(dir); Engine engine = new CpuEngine(m, threadCount)) {
            int maxLen = m.config().maxPositionEmbeddings();
            if (promptLen + genLen > maxLen) {
                throw new IllegalArgumentException("--prompt-len + --gen-len is " + (promptLen + genLen)
                        + ", over the model's max_position_embeddings " + maxLen);
            }
            long weightBytes = decodeWeightBytes(m.weights());
            warmUp(engine, batches.stream().max(Integer::compare).orElseThrow(), promptLen);
            System.err.println("bench: measuring memory bandwidth (" + (BANDWIDTH_BUFFER_BYTES >> 20) + " MiB buffer, "
                    + threadCount + " threads) ...");
            double bandwidth = MemoryBandwidth.measure(threadCount, BANDWIDTH_BUFFER_BYTES, 5);
            double floorSeconds = weightBytes / bandwidth;

            System.out.printf("backend %s, model %s (%d layers, hidden %d), %d threads%n", backend, dir.getFileName(),
                    m.config().numHiddenLayers(), m.config().hiddenSize(), threadCount);
            System.out.printf("weights read per decode step %.1f MB, memory read bandwidth %.1f GB/s, floor %.2f ms/step%n",
                    weightBytes / 1e6, bandwidth / 1e9, floorSeconds * 1e3);
            System.out.println("(ms/step is the median step, robust to other processes taking the CPU now and then; mean beside it)");
            System.out.printf("%-6s %10s %10s %10s %16s %10s%n", "batch", "ms/step", "mean ms", "tokens/s", "floor tokens/s", "of floor");
            for (int batch : batches) {
                System.err.println("bench: batch " + batch + ", " + genLen + " decode steps ...");
                double[] steps = decode(engine, batch, promptLen, genLen);
                double mean = Arrays.stream(steps).average().orElseThrow();
                Arrays.sort(steps);
                double median = steps[steps.length / 2];
                System.out.printf("%-6d %10.2f %10.2f %10.1f %16.1f %10.2f%n", batch, median * 1e3, mean * 1e3,
                        batch / median, batch / floorSeconds, floorSeconds / median);
            }
            return 0;
        }
    }

    /**
     * Until the JIT has compiled the vector kernels, steps run orders of magnitude slower (interpreted Vector API code
     * allocates a box per vector); decode until batch-1 rounds take steady times, a minute at most.
     */
    private void warmUp(Engine engine, int maxBatch, int promptLen) {
        System.err.println("bench: warming up (JIT compilation) ...");
        long deadline = System.nanoTime() + 60_000_000_000L;
        double previous = Double.MAX_VALUE;
        for (int round = 0; System.nanoTime() < deadline; round++) {
            decode(engine, maxBatch, promptLen, 4);
            double seconds = Arrays.stream(decode(engine, 1, promptLen, 16)).sum();
            if (round >= 3 && Math.abs(seconds - previous) < 0.1 * previous) return;
            previous = seconds;
        }
    }

    /** Prefills {@code batch} sequences with pseudo-random prompts, then times each of {@code steps} greedy decode steps. */
    private double[] decode(Engine engine, int batch, int promptLen, int steps) {
        List<Sequence> sequences = new ArrayList<>();
        try {
            List<float[][]> logits = RandomPrompts.prefill(engine, batch, promptLen, new Random(42), sequences);
            double[] seconds = new double[steps];
            for (int i = 0; i < steps; i++) {
                long t0 = System.nanoTime();
                List<Step> decode = new ArrayList<>(batch);
                for (int b = 0; b < batch; b++) decode.add(Step.last(sequences.get(b), argmax(logits.get(b)[0])));
                logits = engine.forward(decode);
                seconds[i] = (System.nanoTime() - t0) / 1e9;
            }
            return seconds;
        } finally {
            sequences.forEach(Sequence::close);
        }
    }

    private static int argmax(float[] x) {
        int best = 0;
        for (int i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
        return best;
    }

    /** Bytes of every weight a decode step reads in full: all layer tensors, projections, final norm, lm_head. */
    static long decodeWeightBytes(OptWeights w) {
        Stream<Tensor> layers = w.layers().stream().flatMap(l -> Stream.of(
                l.attnLayerNormWeight(), l.attnLayerNormBias(), l.qWeight(), l.qBias(), l.kWeight(), l.kBias(),
                l.vWeight(), l.vBias(), l.outWeight(), l.outBias(), l.mlpLayerNormWeight(), l.mlpLayerNormBias(),
                l.fc1Weight(), l.fc1Bias(), l.fc2Weight(), l.fc2Bias()));
        Stream<Tensor> rest = Stream.of(w.projectIn(), w.projectOut(), w.finalLayerNormWeight(), w.finalLayerNormBias(), w.lmHead());
        return Stream.concat(layers, rest).filter(Objects::nonNull).mapToLong(t -> t.data().byteSize()).sum();
    }
}
