package io.dejavu.bench;

import io.dejavu.engine.Sequence;
import io.dejavu.engine.Step;
import io.dejavu.engine.cpu.CpuEngine;
import io.dejavu.model.OptModel;
import io.dejavu.sparsity.Predictors;

import java.lang.management.ManagementFactory;
import java.lang.management.ThreadInfo;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Random;

/**
 * Heap bytes the CPU engine allocates per decode step, summed over its threads (the caller's allocation counter is
 * read just around each forward pass, the workers' too), after a warm-up long enough for C2 to have compiled the
 * kernels (interpreted Vector API code allocates a box per vector). The logits the caller keeps are shown apart;
 * a step whose sequences cross into a new KV-cache block (every 64 positions) also allocates that block, which
 * shows in the mean and the maximum but not in the median.
 *
 * <pre>
 * java --add-modules=jdk.incubator.vector -cp target/dejavu-serve.jar:target/test-classes \
 *     io.dejavu.bench.EngineAllocationBenchmark [model-dir] [batches] [sparse]
 * </pre>
 * Defaults: ../shared/models/opt-mini, batches 1,8,64, dense. With {@code sparse}, every step runs sparse with the
 * predictors in the model's dejavu/ directory.
 */
public final class EngineAllocationBenchmark {
    private static final int PROMPT_LEN = 16;
    private static final int STEPS = 96;
    private static final int WARM_UP_ROUNDS = 6;

    public static void main(String[] args) {
        Path modelDir = Path.of(args.length > 0 ? args[0] : "../shared/models/opt-mini");
        int[] batches = Arrays.stream((args.length > 1 ? args[1] : "1,8,64").split(",")).mapToInt(Integer::parseInt).toArray();
        boolean sparse = args.length > 2 && args[2].equals("sparse");
        try (OptModel model = OptModel.load(modelDir); CpuEngine engine = new CpuEngine(model)) {
            if (sparse) {
                Path dir = modelDir.resolve(Predictors.MODEL_SUBDIRECTORY);
                if (!Files.isDirectory(dir)) throw new IllegalArgumentException("no predictors in " + dir);
                engine.attachPredictors(Predictors.read(dir, model.config()));
            }
            int vocab = model.config().vocabSize();
            for (int round = 0; round < WARM_UP_ROUNDS; round++) for (int batch : batches) decode(engine, batch, sparse);
            System.out.printf("model %s, %s, %d threads, %d decode steps per batch after a %d-token prompt%n",
                    modelDir.getFileName(), sparse ? "sparse" : "dense", engine.threads(), STEPS, PROMPT_LEN);
            System.out.println("batch   median bytes/step   mean   max   logits rows   median beyond the logits");
            for (int batch : batches) {
                long[] bytes = decode(engine, batch, sparse);
                long[] sorted = bytes.clone();
                Arrays.sort(sorted);
                long median = sorted[sorted.length / 2];
                double mean = Arrays.stream(bytes).average().orElseThrow();
                // A float[vocab] is a 16-byte header and its elements; the float[1][] holding it 24 bytes.
                long logits = batch * (16L + 4L * vocab + 24);
                System.out.printf(Locale.ROOT, "%-7d %19d %6.0f %5d %13d %26d%n", batch, median, mean,
                        sorted[sorted.length - 1], logits, median - logits);
            }
        }
    }

    /** Prefills {@code batch} sequences, then returns the bytes each of {@link #STEPS} greedy decode steps allocated. */
    private static long[] decode(CpuEngine engine, int batch, boolean sparse) {
        com.sun.management.ThreadMXBean threads = (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
        long[] workers = engineWorkers(threads);
        List<Sequence> sequences = new ArrayList<>();
        try {
            List<float[][]> logits = RandomPrompts.prefill(engine, batch, PROMPT_LEN, new Random(42), sequences);
            long[] bytes = new long[STEPS];
            for (int i = 0; i < STEPS; i++) {
                List<Step> decode = new ArrayList<>(batch);
                for (int b = 0; b < batch; b++) {
                    decode.add(Step.last(sequences.get(b), argmax(logits.get(b)[0])).withSparse(sparse));
                }
                long workersBefore = allocated(threads, workers);
                long callerBefore = threads.getCurrentThreadAllocatedBytes();
                logits = engine.forward(decode);
                long caller = threads.getCurrentThreadAllocatedBytes() - callerBefore;
                bytes[i] = caller + allocated(threads, workers) - workersBefore;
            }
            return bytes;
        } finally {
            sequences.forEach(Sequence::close);
        }
    }

    /** The ids of the engine's worker threads (the caller is the engine's first thread). */
    private static long[] engineWorkers(com.sun.management.ThreadMXBean threads) {
        return Arrays.stream(threads.getThreadInfo(threads.getAllThreadIds()))
                .filter(info -> info != null && info.getThreadName().startsWith("cpu-engine-"))
                .mapToLong(ThreadInfo::getThreadId).toArray();
    }

    private static long allocated(com.sun.management.ThreadMXBean threads, long[] ids) {
        long sum = 0;
        for (long id : ids) sum += threads.getThreadAllocatedBytes(id);
        return sum;
    }

    private static int argmax(float[] x) {
        int best = 0;
        for (int i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
        return best;
    }
}
