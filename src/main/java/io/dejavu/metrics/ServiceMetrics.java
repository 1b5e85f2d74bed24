package io.dejavu.metrics;

import java.util.ArrayDeque;
import java.util.Arrays;
import java.util.Map;
import java.util.concurrent.ConcurrentSkipListMap;
import java.util.concurrent.atomic.LongAdder;

/**
 * The server's measurements, written in the Prometheus text format by {@link #render()}. The scheduler records
 * steps and tokens from the engine thread; the API verticles record requests and errors from their event loops.
 */
public final class ServiceMetrics {
    private static final double[] LATENCY_BOUNDS = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25,
            0.5, 0.75, 1, 2.5, 5, 10, 30};
    private static final long RATE_WINDOW_NANOS = 10_000_000_000L;

    private final Histogram timeToFirstToken = new Histogram("dejavu_time_to_first_token_seconds",
            "Time from a request's arrival at the scheduler to its first generated token.", LATENCY_BOUNDS);
    private final Histogram interTokenLatency = new Histogram("dejavu_inter_token_latency_seconds",
            "Time between consecutive generated tokens of one request.", LATENCY_BOUNDS);
    private final Histogram stepTime = new Histogram("dejavu_engine_step_seconds",
            "Duration of one batched engine forward pass.", LATENCY_BOUNDS);
    private final Histogram stepGap = new Histogram("dejavu_scheduler_gap_seconds",
            "Time between consecutive engine steps of a busy engine: sampling, streaming out, admitting.",
            LATENCY_BOUNDS);
    private final LongAdder promptTokens = new LongAdder();
    private final LongAdder generatedTokens = new LongAdder();
    private final LongAdder preemptions = new LongAdder();
    private final Map<String, LongAdder> requests = new ConcurrentSkipListMap<>();
    private final Map<String, LongAdder> finished = new ConcurrentSkipListMap<>();
    private final Map<String, LongAdder> errors = new ConcurrentSkipListMap<>();
    private volatile int queueDepth;
    private volatile int running;
    private volatile int batchSize;
    private volatile double kvCacheUsage;
    private volatile double tokensPerSecond;
    private volatile Double sparsity;
    /** (time, generated tokens so far) at recent steps; touched by the engine thread only. */
    private final ArrayDeque<long[]> rateWindow = new ArrayDeque<>();

    public void requestReceived(String endpoint) {
        count(requests, endpoint);
    }

    /**
     * A request that failed or was refused, by kind: the API's error code (invalid_json, invalid_value,
     * unknown_parameter, context_length_exceeded, body_too_large, message_too_large, invalid_api_key, queue_full,
     * shutting_down, ...) or, from the scheduler, engine and sampling.
     */
    public void error(String kind) {
        count(errors, kind);
    }

    public void finished(String reason) {
        count(finished, reason);
    }

    /** A running sequence gave its KV cache up to others and waits to be prefilled again. Engine thread only. */
    public void preempted() {
        preemptions.increment();
    }

    public void promptTokens(int count) {
        promptTokens.add(count);
    }

    public void firstToken(double seconds) {
        timeToFirstToken.observe(seconds);
    }

    public void interToken(double seconds) {
        interTokenLatency.observe(seconds);
    }

    /** Engine thread only. */
    public void stepGap(double seconds) {
        stepGap.observe(seconds);
    }

    public void queue(int waiting, int runningNow) {
        queueDepth = waiting;
        running = runningNow;
    }

    /** Share of a fixed KV cache pool's blocks that sequences hold (the CUDA engine's). */
    public void kvCacheUsage(double share) {
        kvCacheUsage = share;
    }

    /**
     * One engine step. Engine thread only.
     *
     * @param layerSparsity share of FFN neurons skipped per layer by this step's sparse tokens, or null when it ran
     *                      none sparse
     */
    public void step(int batch, int tokens, long nanos, long now, double[] layerSparsity) {
        batchSize = batch;
        stepTime.observe(nanos / 1e9);
        generatedTokens.add(tokens);
        rateWindow.addLast(new long[]{now, generatedTokens.sum()});
        while (rateWindow.size() > 1 && now - rateWindow.peekFirst()[0] > RATE_WINDOW_NANOS) rateWindow.removeFirst();
        long[] first = rateWindow.peekFirst();
        long span = now - first[0];
        tokensPerSecond = span > 0 ? (generatedTokens.sum() - first[1]) * 1e9 / span : 0;
        sparsity = layerSparsity == null ? null : Arrays.stream(layerSparsity).average().orElse(0);
    }

    /** The engine is idle: the rate decays to zero rather than keeping its last value. */
    public void idle() {
        batchSize = 0;
        tokensPerSecond = 0;
        rateWindow.clear();
    }

    public String render() {
        StringBuilder out = new StringBuilder(4096);
        gauge(out, "dejavu_queue_depth", "Requests waiting for a batch slot.", queueDepth);
        gauge(out, "dejavu_running_sequences", "Sequences in the running batch.", running);
        gauge(out, "dejavu_batch_size", "Sequences in the last engine step.", batchSize);
        gauge(out, "dejavu_kv_cache_usage",
                "Share of the KV cache's blocks in use (an engine with a fixed pool; 0 for the CPU engine's, which grows).",
                kvCacheUsage);
        gauge(out, "dejavu_tokens_per_second", "Generated tokens per second over the last 10 seconds.",
                tokensPerSecond);
        Double s = sparsity;
        // A dense engine skips nothing: 0 is what it achieves, not a missing value.
        gauge(out, "dejavu_sparsity_achieved",
                "Mean share of FFN neurons skipped per layer by the last step's sparse tokens (0 = a dense step).", s == null ? 0 : s);
        counter(out, "dejavu_prompt_tokens_total", "Prompt tokens admitted.", promptTokens.sum());
        counter(out, "dejavu_generated_tokens_total", "Tokens generated.", generatedTokens.sum());
        counter(out, "dejavu_preemptions_total",
                "Running sequences preempted for want of KV cache blocks (prefilled again later).", preemptions.sum());
        labelled(out, "dejavu_requests_total", "Requests received, by endpoint.", "endpoint", requests);
        labelled(out, "dejavu_finished_total", "Generations finished, by finish reason.", "reason", finished);
        labelled(out, "dejavu_errors_total", "Failed or refused requests, by kind.", "kind", errors);
        timeToFirstToken.write(out);
        interTokenLatency.write(out);
        stepTime.write(out);
        stepGap.write(out);
        return out.toString();
    }

    private static void count(Map<String, LongAdder> counters, String label) {
        counters.computeIfAbsent(label, l -> new LongAdder()).increment();
    }

    private static void gauge(StringBuilder out, String name, String help, double value) {
        header(out, name, help, "gauge");
        out.append(name).append(' ').append(value).append('\n');
    }

    private static void counter(StringBuilder out, String name, String help, long value) {
        header(out, name, help, "counter");
        out.append(name).append(' ').append(value).append('\n');
    }

    private static void labelled(StringBuilder out, String name, String help, String label,
                                 Map<String, LongAdder> values) {
        header(out, name, help, "counter");
        values.forEach((key, value) -> out.append(name).append('{').append(label).append("=\"").append(key)
                .append("\"} ").append(value.sum()).append('\n'));
    }

    private static void header(StringBuilder out, String name, String help, String type) {
        out.append("# HELP ").append(name).append(' ').append(help).append('\n');
        out.append("# TYPE ").append(name).append(' ').append(type).append('\n');
    }
}
