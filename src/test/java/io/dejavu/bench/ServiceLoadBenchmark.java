package io.dejavu.bench;

import io.dejavu.config.ServiceConfig;
import io.dejavu.server.DejavuServer;
import io.vertx.core.Vertx;
import io.vertx.core.http.WebSocket;
import io.vertx.core.http.WebSocketClient;
import io.vertx.core.http.WebSocketClientOptions;
import io.vertx.core.http.WebSocketConnectOptions;
import io.vertx.core.json.JsonObject;

import java.io.IOException;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

/**
 * Load test of the whole service on loopback: N concurrent WebSocket streams (one per connection) against an
 * in-process server with the CPU engine. Checks that every stream gets each token exactly once and in order, then
 * reports throughput, time to first token and inter-token latency as the clients saw them, next to the engine's own
 * step time (which every token message carries, with the batch size of its step).
 *
 * <pre>
 * java --add-modules=jdk.incubator.vector -cp target/dejavu-serve.jar:target/test-classes \
 *     io.dejavu.bench.ServiceLoadBenchmark [model-dir] [streams] [max-tokens]
 * </pre>
 * Defaults: ../shared/models/opt-mini, 64 streams, 48 tokens each. Bounded: one warm-up round and one measured
 * round, each given at most 10 minutes.
 */
public final class ServiceLoadBenchmark {
    private static final List<String> PROMPTS = List.of(
            "In the beginning God created the heaven and the earth.",
            "Mr. Speaker, Mr. President, Members of the Congress, my fellow Americans:",
            "The os module provides a portable way of using operating system dependent functionality.",
            "To configure the network interface, edit the file",
            "And it came to pass, when the king heard the words",
            "Tonight I want to talk with you about the state of our economy.",
            "A dictionary is a collection of key-value pairs. To create one,",
            "The Debian package management system keeps track of");

    /** One stream's record: when it was sent, when each token arrived. */
    private static final class Stream {
        final long sentNanos = System.nanoTime();
        final List<Long> arrivals = new ArrayList<>();
        final List<Double> stepMillis = new ArrayList<>();
        final List<Integer> batchSizes = new ArrayList<>();
        final CompletableFuture<JsonObject> done = new CompletableFuture<>();
        String problem;
    }

    public static void main(String[] args) throws Exception {
        Path model = Path.of(args.length > 0 ? args[0] : "../shared/models/opt-mini");
        int streams = args.length > 1 ? Integer.parseInt(args[1]) : 64;
        int maxTokens = args.length > 2 ? Integer.parseInt(args[2]) : 48;
        int port = freePort();
        ServiceConfig config = ServiceConfig.load(null, Map.of(), Map.of("model", model.toString(), "backend", "cpu",
                "port", Integer.toString(port), "max_batch_size", Integer.toString(streams),
                "queue_limit", Integer.toString(streams), "http_instances", "2"));
        System.err.printf("load: %d streams x %d tokens on %s, %d cores%n", streams, maxTokens, model,
                Runtime.getRuntime().availableProcessors());
        DejavuServer server = DejavuServer.start(config, model.getFileName().toString());
        Vertx vertx = Vertx.vertx();
        WebSocketClient client = vertx.createWebSocketClient(new WebSocketClientOptions().setMaxConnections(2 * streams));
        try {
            System.err.println("load: warm-up round (JIT), not measured");
            round(client, port, Math.min(streams, 8), 8);
            System.err.println("load: measured round");
            long start = System.nanoTime();
            List<Stream> results = round(client, port, streams, maxTokens);
            double wallSeconds = (System.nanoTime() - start) / 1e9;
            report(results, wallSeconds, streams, maxTokens, model);
            System.out.printf(Locale.ROOT, "mean gap between engine steps (sampling, streaming, admission), whole run: %.1f ms%n",
                    meanGapMillis(port));
        } finally {
            client.close();
            vertx.close();
            server.close();
        }
    }

    private static List<Stream> round(WebSocketClient client, int port, int streams, int maxTokens) throws Exception {
        List<WebSocket> sockets = new ArrayList<>();
        for (int i = 0; i < streams; i++) {
            sockets.add(client.connect(new WebSocketConnectOptions().setHost("127.0.0.1").setPort(port).setURI("/ws"))
                    .toCompletionStage().toCompletableFuture().get(30, TimeUnit.SECONDS));
        }
        List<Stream> results = new ArrayList<>();
        for (int i = 0; i < streams; i++) {
            WebSocket socket = sockets.get(i);
            Stream stream = new Stream();
            results.add(stream);
            socket.textMessageHandler(text -> receive(stream, new JsonObject(text)));
            socket.writeTextMessage(new JsonObject().put("type", "generate").put("id", "s" + i)
                    .put("prompt", PROMPTS.get(i % PROMPTS.size())).put("max_tokens", maxTokens)
                    .put("temperature", 0.8).put("seed", i).encode());
        }
        CompletableFuture.allOf(results.stream().map(s -> s.done).toArray(CompletableFuture[]::new))
                .get(10, TimeUnit.MINUTES);
        for (WebSocket socket : sockets) socket.close();
        return results;
    }

    /** Runs on the client's event loop; the arrival time is taken before anything else. */
    private static void receive(Stream stream, JsonObject message) {
        long now = System.nanoTime();
        switch (message.getString("type")) {
            case "token" -> {
                if (message.getInteger("index") != stream.arrivals.size() && stream.problem == null) {
                    stream.problem = "token " + message.getInteger("index") + " arrived as number " + stream.arrivals.size();
                }
                stream.arrivals.add(now);
                JsonObject timing = message.getJsonObject("timing");
                stream.stepMillis.add(timing.getDouble("step_ms"));
                stream.batchSizes.add(timing.getInteger("batch_size"));
            }
            case "done" -> stream.done.complete(message);
            default -> stream.done.completeExceptionally(new IllegalStateException("server error: " + message.encode()));
        }
    }

    private static void report(List<Stream> results, double wallSeconds, int streams, int maxTokens, Path model) {
        List<Double> ttft = new ArrayList<>();
        List<Double> itl = new ArrayList<>();
        List<Double> overhead = new ArrayList<>();
        List<Double> ratio = new ArrayList<>();
        Map<Integer, List<Double>> stepsByBatch = new HashMap<>();
        long tokens = 0;
        int problems = 0;
        for (Stream stream : results) {
            JsonObject done = stream.done.join();
            int completion = done.getJsonObject("usage").getInteger("completion_tokens");
            if (stream.problem != null || completion != stream.arrivals.size()) {
                problems++;
                System.err.println("load: stream broken: " + (stream.problem != null ? stream.problem
                        : completion + " tokens counted, " + stream.arrivals.size() + " delivered"));
            }
            tokens += stream.arrivals.size();
            ttft.add((stream.arrivals.getFirst() - stream.sentNanos) / 1e6);
            for (int i = 1; i < stream.arrivals.size(); i++) {
                double gap = (stream.arrivals.get(i) - stream.arrivals.get(i - 1)) / 1e6;
                itl.add(gap);
                // What the service adds beyond the engine: the gap less the step that made the token.
                overhead.add(gap - stream.stepMillis.get(i));
                ratio.add(gap / stream.stepMillis.get(i));
                stepsByBatch.computeIfAbsent(stream.batchSizes.get(i), b -> new ArrayList<>()).add(stream.stepMillis.get(i));
            }
        }
        List<Double> fullBatch = stepsByBatch.getOrDefault(streams, List.of());
        List<Double> allSteps = stepsByBatch.values().stream().flatMap(List::stream).toList();
        double itlP99 = percentile(itl, 99);
        double stepP50 = percentile(fullBatch.isEmpty() ? allSteps : fullBatch, 50);
        StringBuilder out = new StringBuilder();
        out.append(String.format(Locale.ROOT, "model %s, %d WebSocket streams x max %d tokens, %d cores%n",
                model.getFileName(), streams, maxTokens, Runtime.getRuntime().availableProcessors()));
        out.append(String.format(Locale.ROOT, "delivered %d tokens in %.1f s: %.1f tokens/s; streams broken: %d%n",
                tokens, wallSeconds, tokens / wallSeconds, problems));
        out.append(String.format(Locale.ROOT, "| measure | p50 ms | p99 ms |%n|---|---|---|%n"));
        out.append(row("time to first token", ttft));
        out.append(row("inter-token latency (client)", itl));
        out.append(row("engine step, batch " + streams + " (" + fullBatch.size() + " tokens)", fullBatch));
        out.append(row("engine step, any batch", allSteps));
        out.append(row("inter-token latency less its step (service overhead)", overhead));
        out.append(String.format(Locale.ROOT, "| inter-token latency / the step time of the same token | %.2f | %.2f |%n",
                percentile(ratio, 50), percentile(ratio, 99)));
        out.append(String.format(Locale.ROOT, "p99 inter-token latency / p50 step time at batch %d = %.2f; "
                + "p99 / p99 = %.2f (goal <= 1.2)%n", streams, itlP99 / stepP50,
                itlP99 / percentile(fullBatch.isEmpty() ? allSteps : fullBatch, 99)));
        System.out.print(out);
        if (problems > 0) System.exit(1);
    }

    /** From the server's own metrics: dejavu_scheduler_gap_seconds sum / count. */
    private static double meanGapMillis(int port) throws Exception {
        try (HttpClient http = HttpClient.newHttpClient()) {
            String metrics = http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + "/metrics")).build(),
                    HttpResponse.BodyHandlers.ofString()).body();
            return 1000 * value(metrics, "dejavu_scheduler_gap_seconds_sum ")
                    / value(metrics, "dejavu_scheduler_gap_seconds_count ");
        }
    }

    private static double value(String metrics, String prefix) {
        return metrics.lines().filter(l -> l.startsWith(prefix))
                .mapToDouble(l -> Double.parseDouble(l.substring(prefix.length()))).findFirst().orElseThrow();
    }

    private static String row(String name, List<Double> values) {
        return String.format(Locale.ROOT, "| %s | %.1f | %.1f |%n", name, percentile(values, 50), percentile(values, 99));
    }

    private static double percentile(List<Double> values, double p) {
        if (values.isEmpty()) return Double.NaN;
        double[] sorted = values.stream().mapToDouble(Double::doubleValue).toArray();
        Arrays.sort(sorted);
        return sorted[(int) Math.min(sorted.length - 1, Math.ceil(p / 100 * sorted.length) - 1)];
    }

    private static int freePort() throws IOException {
        try (ServerSocket socket = new ServerSocket(0)) {
            return socket.getLocalPort();
        }
    }
}
