package io.dejavu.server;

import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.Socket;
import java.net.URI;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The OpenAI-compatible HTTP API, /health, /metrics and the webroot, against a real server and the CPU engine. */
class HttpApiTest {
    private static TestServer server;

    @BeforeAll
    static void start() {
        server = TestServer.start(Map.of("max_prompt_tokens", "64", "max_body_bytes", "4096",
                "cors_origins", "http://playground.test"));
    }

    @AfterAll
    static void stop() {
        server.close();
    }

    @Test
    void healthReportsTheReadyEngine() {
        HttpResponse<String> response = server.get("/health");
        assertEquals(200, response.statusCode());
        JsonObject health = new JsonObject(response.body());
        assertEquals(true, health.getBoolean("ready"));
        assertEquals("ready", health.getJsonObject("engine").getString("state"));
        assertEquals("cpu", health.getJsonObject("engine").getString("backend"));
    }

    @Test
    void modelsListsTheServedModel() {
        JsonObject models = new JsonObject(server.get("/v1/models").body());
        assertEquals("list", models.getString("object"));
        assertEquals("opt-demo", models.getJsonArray("data").getJsonObject(0).getString("id"));
    }

    @Test
    void completionReturnsTextUsageAndFinishReason() {
        JsonObject answer = completion("{\"prompt\": \"In the beginning\", \"max_tokens\": 6, \"temperature\": 0}");
        assertEquals("text_completion", answer.getString("object"));
        JsonObject choice = answer.getJsonArray("choices").getJsonObject(0);
        JsonObject usage = answer.getJsonObject("usage");
        // "In the beginning" is three tokens after OPT's leading one.
        assertEquals(4, usage.getInteger("prompt_tokens"));
        int generated = usage.getInteger("completion_tokens");
        assertTrue(generated >= 1 && generated <= 6);
        assertEquals(generated == 6 ? "length" : "stop", choice.getString("finish_reason"));
        assertFalse(choice.getString("text").isEmpty());
    }

    @Test
    void streamedCompletionSendsTheSameTextInOrderEndingWithDone() {
        String request = "{\"prompt\": \"The king said\", \"max_tokens\": 12, \"temperature\": 0";
        JsonObject whole = completion(request + "}");
        List<String> events = sse(server.post("/v1/completions", request + ", \"stream\": true, "
                + "\"stream_options\": {\"include_usage\": true}}"));
        assertEquals("[DONE]", events.getLast());
        StringBuilder text = new StringBuilder();
        String finish = null;
        JsonObject usage = null;
        for (String event : events.subList(0, events.size() - 1)) {
            JsonObject chunk = new JsonObject(event);
            if (chunk.containsKey("usage")) {
                usage = chunk.getJsonObject("usage");
                continue;
            }
            assertNull(finish, "only the usage follows the chunk with the finish reason");
            JsonObject choice = chunk.getJsonArray("choices").getJsonObject(0);
            text.append(choice.getString("text"));
            finish = choice.getString("finish_reason");
        }
        JsonObject wholeChoice = whole.getJsonArray("choices").getJsonObject(0);
        assertEquals(wholeChoice.getString("text"), text.toString());
        assertEquals(wholeChoice.getString("finish_reason"), finish);
        assertEquals(whole.getJsonObject("usage"), usage);
        assertEquals("[DONE]", events.getLast());
    }

    @Test
    void chatAnswersAsTheAssistantAndStreamsTheSameContent() {
        String request = "{\"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}], \"max_tokens\": 8, "
                + "\"temperature\": 0";
        HttpResponse<String> response = server.post("/v1/chat/completions", request + "}");
        assertEquals(200, response.statusCode(), response.body());
        JsonObject whole = new JsonObject(response.body());
        assertEquals("chat.completion", whole.getString("object"));
        JsonObject message = whole.getJsonArray("choices").getJsonObject(0).getJsonObject("message");
        assertEquals("assistant", message.getString("role"));

        List<String> events = sse(server.post("/v1/chat/completions", request + ", \"stream\": true}"));
        assertEquals("[DONE]", events.getLast());
        JsonObject first = new JsonObject(events.getFirst()).getJsonArray("choices").getJsonObject(0);
        assertEquals("assistant", first.getJsonObject("delta").getString("role"));
        StringBuilder content = new StringBuilder();
        for (String event : events.subList(0, events.size() - 1)) {
            JsonObject chunk = new JsonObject(event);
            assertEquals("chat.completion.chunk", chunk.getString("object"));
            String delta = chunk.getJsonArray("choices").getJsonObject(0).getJsonObject("delta").getString("content");
            if (delta != null) content.append(delta);
        }
        assertEquals(message.getString("content"), content.toString());
    }

    /** A stop sequence ends the answer before it, streamed or not, with finish_reason "stop". */
    @Test
    void aStopSequenceEndsTheAnswerBeforeIt() {
        String request = "{\"prompt\": \"The President said\", \"max_tokens\": 20, \"temperature\": 0";
        String free = choiceText(completion(request + "}"));
        // A word from the middle of the greedy answer: the same answer, cut just before it.
        int at = free.indexOf(' ', free.length() / 2);
        String stop = free.substring(at, free.indexOf(' ', at + 1) > 0 ? free.indexOf(' ', at + 1) : free.length());
        String expected = free.substring(0, free.indexOf(stop));
        String stopped = request + ", \"stop\": [" + new JsonArray().add(stop).encode().substring(1);
        JsonObject whole = completion(stopped + "}");
        assertEquals(expected, choiceText(whole));
        assertEquals("stop", whole.getJsonArray("choices").getJsonObject(0).getString("finish_reason"));
        StringBuilder streamed = new StringBuilder();
        String finish = null;
        for (String event : sse(server.post("/v1/completions", stopped + ", \"stream\": true}"))) {
            if (event.equals("[DONE]")) break;
            JsonObject choice = new JsonObject(event).getJsonArray("choices").getJsonObject(0);
            streamed.append(choice.getString("text"));
            if (choice.getString("finish_reason") != null) finish = choice.getString("finish_reason");
        }
        assertEquals(expected, streamed.toString());
        assertEquals("stop", finish);
    }

    /** A seed gives the same sampled answer whether the request runs alone or batched with others; user is accepted. */
    @Test
    void aSeedReproducesTheAnswerAloneOrBatched() {
        String seeded = "{\"prompt\": \"The President said\", \"max_tokens\": 24, \"temperature\": 1, "
                + "\"seed\": 123, \"n\": 1, \"user\": \"test-user\"}";
        String alone = choiceText(completion(seeded));
        List<CompletableFuture<HttpResponse<String>>> others = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            others.add(server.http().sendAsync(HttpRequest.newBuilder(URI.create(server.url("/v1/completions")))
                    .POST(HttpRequest.BodyPublishers.ofString("{\"prompt\": \"Another prompt, number " + i
                            + "\", \"max_tokens\": 40, \"temperature\": 1}"))
                    .header("Content-Type", "application/json").build(), HttpResponse.BodyHandlers.ofString()));
        }
        String batched = choiceText(completion(seeded));
        others.forEach(CompletableFuture::join);
        assertEquals(alone, batched);
        assertNotEquals(alone, choiceText(completion(seeded.replace("123", "124"))));
    }

    private static String choiceText(JsonObject answer) {
        return answer.getJsonArray("choices").getJsonObject(0).getString("text");
    }

    @Test
    void logprobsReportEachTokenAndItsAlternatives() {
        JsonObject answer = completion("{\"prompt\": \"The\", \"max_tokens\": 3, \"temperature\": 0, \"logprobs\": 2}");
        JsonObject logprobs = answer.getJsonArray("choices").getJsonObject(0).getJsonObject("logprobs");
        JsonArray tokens = logprobs.getJsonArray("tokens");
        assertEquals(answer.getJsonObject("usage").getInteger("completion_tokens"), tokens.size());
        for (int i = 0; i < tokens.size(); i++) {
            double logprob = logprobs.getJsonArray("token_logprobs").getDouble(i);
            JsonObject top = logprobs.getJsonArray("top_logprobs").getJsonObject(i);
            assertEquals(2, top.size());
            // Greedy: the chosen token is the most probable one.
            assertEquals(top.stream().mapToDouble(e -> ((Number) e.getValue()).doubleValue()).max().orElseThrow(),
                    logprob, 1e-6);
        }
    }

    @ParameterizedTest(name = "{0} -> {1} {2}")
    @CsvSource(delimiter = '|', value = {
            "{bad json|400|",
            "''|400|",
            "' '|400|",
            "[1, 2]|400|",
            "{\"prompt\": \"\"}|400|prompt",
            "{\"max_tokens\": 3}|400|prompt",
            "{\"prompt\": 5}|400|prompt",
            "{\"prompt\": \"x\", \"bogus\": 1}|400|bogus",
            "{\"prompt\": \"x\", \"temperature\": \"hot\"}|400|temperature",
            "{\"prompt\": \"x\", \"temperature\": 2.5}|400|temperature",
            "{\"prompt\": \"x\", \"top_p\": 0}|400|top_p",
            "{\"prompt\": \"x\", \"top_k\": -1}|400|top_k",
            "{\"prompt\": \"x\", \"max_tokens\": 0}|400|max_tokens",
            "{\"prompt\": \"x\", \"max_tokens\": 1.5}|400|max_tokens",
            "{\"prompt\": \"x\", \"max_tokens\": 100000}|400|max_tokens",
            "{\"prompt\": \"x\", \"n\": 2}|400|n",
            "{\"prompt\": \"x\", \"stop\": [\"a\", \"b\", \"c\", \"d\", \"e\"]}|400|stop",
            "{\"prompt\": \"x\", \"seed\": \"one\"}|400|seed",
            "{\"prompt\": \"x\", \"stream\": \"yes\"}|400|stream",
            "{\"prompt\": \"x\", \"logprobs\": 50}|400|logprobs",
            "{\"prompt\": \"x\", \"model\": \"gpt-4\"}|404|model",
    })
    void badCompletionRequestsGetAnOpenAiError(String body, int status, String param) {
        HttpResponse<String> response = server.post("/v1/completions", body);
        assertEquals(status, response.statusCode(), response.body());
        JsonObject error = new JsonObject(response.body()).getJsonObject("error");
        assertFalse(error.getString("message").isBlank());
        assertEquals(param, error.getString("param"), error.getString("message"));
        assertFalse(response.body().contains("Exception"), response.body());
    }

    @ParameterizedTest(name = "{0} -> {1}")
    @CsvSource(delimiter = '|', value = {
            "{\"messages\": []}|messages",
            "{\"messages\": [{\"role\": \"wizard\", \"content\": \"hi\"}]}|messages[0].role",
            "{\"messages\": [{\"role\": \"user\", \"content\": 3}]}|messages[0].content",
            "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"prompt\": \"x\"}|prompt",
    })
    void badChatRequestsGetAnOpenAiError(String body, String param) {
        HttpResponse<String> response = server.post("/v1/chat/completions", body);
        assertEquals(400, response.statusCode(), response.body());
        assertEquals(param, new JsonObject(response.body()).getJsonObject("error").getString("param"));
    }

    @Test
    void tooLongPromptIsRefused() {
        HttpResponse<String> response = server.post("/v1/completions",
                new JsonObject().put("prompt", "the king ".repeat(100)).encode());
        assertEquals(400, response.statusCode());
        assertEquals("context_length_exceeded", new JsonObject(response.body()).getJsonObject("error").getString("code"));
    }

    @Test
    void oversizedBodyIsRefusedWith413() {
        HttpResponse<String> response = server.post("/v1/completions",
                new JsonObject().put("prompt", "x".repeat(10_000)).encode());
        assertEquals(413, response.statusCode());
        assertEquals("body_too_large", new JsonObject(response.body()).getJsonObject("error").getString("code"));
    }

    @Test
    void unknownPathsAndMethodsGetJsonErrors() {
        HttpResponse<String> missing = server.get("/v1/nothing");
        assertEquals(404, missing.statusCode());
        assertEquals("not_found", new JsonObject(missing.body()).getJsonObject("error").getString("code"));
        assertEquals(405, server.get("/v1/completions").statusCode());
    }

    @Test
    void corsAllowsTheConfiguredOriginOnly() {
        HttpResponse<String> preflight = server.send(HttpRequest.newBuilder(URI.create(server.url("/v1/completions")))
                .method("OPTIONS", HttpRequest.BodyPublishers.noBody())
                .header("Origin", "http://playground.test")
                .header("Access-Control-Request-Method", "POST")
                .header("Access-Control-Request-Headers", "content-type,authorization"));
        assertTrue(preflight.statusCode() / 100 == 2, "preflight status " + preflight.statusCode());
        assertEquals("http://playground.test", preflight.headers().firstValue("Access-Control-Allow-Origin").orElseThrow());
        HttpResponse<String> foreign = server.send(HttpRequest.newBuilder(URI.create(server.url("/v1/models")))
                .header("Origin", "http://elsewhere.test"));
        assertTrue(foreign.headers().firstValue("Access-Control-Allow-Origin").isEmpty(), foreign.headers().toString());
    }

    @Test
    void webrootIsServedAtTheRoot() {
        HttpResponse<String> index = server.get("/");
        assertEquals(200, index.statusCode());
        assertTrue(index.body().contains("dejavu-serve"));
    }

    @Test
    void metricsAreInPrometheusTextFormat() {
        completion("{\"prompt\": \"The\", \"max_tokens\": 2}");
        String metrics = server.get("/metrics").body();
        for (String name : List.of("dejavu_queue_depth ", "dejavu_batch_size ", "dejavu_tokens_per_second ",
                "dejavu_sparsity_achieved ", "dejavu_time_to_first_token_seconds_bucket{le=\"+Inf\"} ",
                "dejavu_inter_token_latency_seconds_count ", "dejavu_requests_total{endpoint=\"completions\"} ",
                "dejavu_kv_cache_usage ", "dejavu_preemptions_total ")) {
            assertTrue(metrics.contains(name), name + " missing from\n" + metrics);
        }
        long generated = metrics.lines().filter(l -> l.startsWith("dejavu_generated_tokens_total "))
                .mapToLong(l -> Long.parseLong(l.split(" ")[1])).findFirst().orElseThrow();
        assertTrue(generated >= 2);
    }

    /** A client that goes away mid-stream frees its batch slot: its generation ends as cancelled. */
    @Test
    void disconnectingMidStreamCancelsTheGeneration() throws Exception {
        String body = "{\"prompt\": \"And the LORD\", \"max_tokens\": 250, \"stream\": true}";
        try (Socket socket = new Socket("127.0.0.1", server.port)) {
            OutputStream out = socket.getOutputStream();
            out.write(("POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                    + "Content-Length: " + body.length() + "\r\n\r\n" + body).getBytes(StandardCharsets.US_ASCII));
            out.flush();
            BufferedReader in = new BufferedReader(new InputStreamReader(socket.getInputStream(), StandardCharsets.UTF_8));
            String line;
            while ((line = in.readLine()) != null && !line.startsWith("data: ")) {
                // headers and chunk sizes
            }
            assertTrue(line != null && line.startsWith("data: "), "a first chunk arrives");
        }
        long deadline = System.nanoTime() + 10_000_000_000L;
        while (cancelled() < 1 && System.nanoTime() < deadline) Thread.sleep(20);
        assertEquals(1, cancelled());
        assertEquals(0, new JsonObject(server.get("/health").body()).getJsonObject("engine").getInteger("running"));
    }

    private static long cancelled() {
        return server.get("/metrics").body().lines().filter(l -> l.startsWith("dejavu_finished_total{reason=\"cancelled\"}"))
                .mapToLong(l -> Long.parseLong(l.substring(l.lastIndexOf(' ') + 1))).sum();
    }

    private static JsonObject completion(String body) {
        HttpResponse<String> response = server.post("/v1/completions", body);
        assertEquals(200, response.statusCode(), response.body());
        assertTrue(response.headers().firstValue("Content-Type").orElseThrow().startsWith("application/json"));
        return new JsonObject(response.body());
    }

    /** The data of each Server-Sent Event, in order. */
    private static List<String> sse(HttpResponse<String> response) {
        assertEquals(200, response.statusCode(), response.body());
        assertEquals("text/event-stream", response.headers().firstValue("Content-Type").orElseThrow());
        List<String> events = new ArrayList<>();
        for (String block : response.body().split("\n\n")) {
            if (block.isBlank()) continue;
            assertTrue(block.startsWith("data: "), block);
            events.add(block.substring("data: ".length()));
        }
        return events;
    }
}
