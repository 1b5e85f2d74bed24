package io.dejavu.api;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.databind.JsonNode;
import io.dejavu.generation.FinishReason;
import io.dejavu.metrics.ServiceMetrics;
import io.dejavu.sampling.TokenLogprob;
import io.dejavu.scheduler.GenerationEvent;
import io.netty.handler.codec.http.websocketx.CorruptedWebSocketFrameException;
import io.vertx.core.http.ServerWebSocket;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Map;

/**
 * One WebSocket connection on /ws, carrying any number of concurrent generations, each named by the client's id.
 *
 * <p>Client messages: {"type": "generate", "id": ..., "prompt": ... | "messages": [...], parameters as in the
 * OpenAI API} and {"type": "cancel", "id": ...}. Server messages: {"type": "token", ...} per generated token,
 * {"type": "done", ...} once per generation (with usage and finish_reason), and {"type": "error", "id", "error"}
 * for a message that could not be acted on. Closing the connection cancels its generations.
 * Runs on one event loop.
 */
final class WebSocketSession {
    private static final int MAX_ID_LENGTH = 256;
    private static final short MESSAGE_TOO_BIG = 1009;
    private static final JsonFactory JSON = new JsonFactory();

    private final ServerWebSocket socket;
    private final RequestReader reader;
    private final EngineClient engine;
    private final OpenAiFormat format;
    private final ServiceMetrics metrics;
    private final int maxMessageBytes;
    /** The connection's generations by client id; the submission is null until the scheduler accepts it. */
    private final Map<String, Running> generations = new HashMap<>();
    private boolean closed;

    private static final class Running {
        EngineClient.Submitted submitted;
        boolean cancelRequested;
        boolean logprobs;

        void cancel() {
            cancelRequested = true;
            if (submitted != null) submitted.cancel();
        }
    }

    WebSocketSession(ServerWebSocket socket, RequestReader reader, EngineClient engine, OpenAiFormat format,
                     ServiceMetrics metrics, int maxMessageBytes) {
        this.socket = socket;
        this.reader = reader;
        this.engine = engine;
        this.format = format;
        this.metrics = metrics;
        this.maxMessageBytes = maxMessageBytes;
    }

    /** @param onClose runs when the connection closes */
    void start(Runnable onClose) {
        socket.textMessageHandler(this::onMessage);
        socket.binaryMessageHandler(data -> sendError(null, new ApiException(400, "invalid_request_error", null,
                "invalid_message", "send JSON text messages, not binary ones")));
        // Past Vert.x's hard limit (4x maxMessageBytes) a message is not read at all: one frame that large makes
        // Vert.x close with 1000 (normal), a message in smaller frames was dropped without a word while the
        // client waited for its answer. Either way the client is told why: 1009, message too big.
        socket.exceptionHandler(e -> {
            if (e instanceof CorruptedWebSocketFrameException || e instanceof IllegalStateException) {
                metrics.error("message_too_large");
                socket.close(MESSAGE_TOO_BIG, "message too big");
            }
        });
        socket.closeHandler(v -> {
            closed = true;
            onClose.run();
            generations.values().forEach(Running::cancel);
        });
    }

    private void onMessage(String text) {
        String id = null;
        try {
            if (text.length() > maxMessageBytes || text.getBytes(StandardCharsets.UTF_8).length > maxMessageBytes) {
                id = idOf(text);
                throw new ApiException(413, "invalid_request_error", null, "message_too_large",
                        "the message is larger than the limit of " + maxMessageBytes + " bytes");
            }
            JsonNode message = RequestReader.parse(text);
            JsonNode idNode = message.get("id");
            if (idNode == null || !idNode.isTextual() || idNode.asText().isEmpty() || idNode.asText().length() > MAX_ID_LENGTH) {
                throw ApiException.invalid("id", "id must be a non-empty string of at most " + MAX_ID_LENGTH + " characters");
            }
            id = idNode.asText();
            JsonNode type = message.get("type");
            switch (type == null || !type.isTextual() ? "" : type.asText()) {
                case "generate" -> generate(id, message);
                case "cancel" -> cancel(id);
                default -> throw ApiException.invalid("type", "type must be \"generate\" or \"cancel\"");
            }
        } catch (ApiException e) {
            metrics.error(e.kind());
            sendError(id, e);
        }
    }

    /**
     * The top-level "id" of a message refused for its size, found without building the message, so that the client
     * learns which of its generations was refused (else it would wait for it forever); null when there is none.
     * Vert.x has already bounded the message at 4 times the limit.
     */
    private static String idOf(String text) {
        try (JsonParser parser = JSON.createParser(text)) {
            if (parser.nextToken() != JsonToken.START_OBJECT) return null;
            while (parser.nextToken() == JsonToken.FIELD_NAME) {
                String name = parser.currentName();
                JsonToken value = parser.nextToken();
                if (name.equals("id")) {
                    String id = value == JsonToken.VALUE_STRING ? parser.getText() : "";
                    return id.isEmpty() || id.length() > MAX_ID_LENGTH ? null : id;
                }
                parser.skipChildren();
            }
        } catch (IOException e) {
            // Not JSON: the error goes out without an id.
        }
        return null;
    }

    private void generate(String clientId, JsonNode message) {
        metrics.requestReceived(Endpoint.WEBSOCKET.label);
        if (generations.containsKey(clientId)) {
            throw ApiException.invalid("id", "a generation with id '" + clientId + "' is already running on this connection");
        }
        RequestReader.ApiRequest request = reader.read(message, Endpoint.WEBSOCKET);
        Running running = new Running();
        running.logprobs = request.params().logprobs();
        generations.put(clientId, running);
        engine.submit(EngineClient.newRequestId(), request.promptIds(), request.params(), request.sparse(),
                        event -> onEvent(clientId, running, event))
                .onSuccess(submitted -> {
                    running.submitted = submitted;
                    if (running.cancelRequested) submitted.cancel();
                })
                .onFailure(failure -> {
                    generations.remove(clientId);
                    ApiException error = failure instanceof ApiException api ? api
                            : new ApiException(500, "server_error", null, "internal_error", "the request failed");
                    metrics.error(error.kind());
                    sendError(clientId, error);
                });
    }

    private void cancel(String clientId) {
        Running running = generations.get(clientId);
        if (running == null) {
            throw new ApiException(404, "invalid_request_error", "id", "not_found",
                    "no generation with id '" + clientId + "' is running on this connection");
        }
        running.cancel();
    }

    private void onEvent(String clientId, Running running, GenerationEvent event) {
        switch (event) {
            case GenerationEvent.Token token -> send(tokenMessage(clientId, running, token));
            case GenerationEvent.Finish finish -> {
                generations.remove(clientId);
                send(doneMessage(clientId, finish));
            }
        }
    }

    private JsonObject tokenMessage(String clientId, Running running, GenerationEvent.Token token) {
        JsonObject message = new JsonObject()
                .put("type", "token")
                .put("id", clientId)
                .put("index", token.index())
                .put("token_id", token.tokenId())
                .put("text", token.text())
                .put("sparsity", perLayer(token.mlpSkipped()))
                .put("head_sparsity", perLayer(token.headsSkipped()))
                .put("timing", new JsonObject()
                        .put("step_ms", token.stepNanos() / 1e6)
                        .put("batch_size", token.batchSize())
                        .put("elapsed_ms", token.elapsedNanos() / 1e6));
        if (running.logprobs) {
            JsonArray top = new JsonArray();
            for (TokenLogprob alternative : token.topLogprobs()) top.add(format.tokenLogprob(alternative.token(), alternative.logprob()));
            message.put("logprob", token.logprob()).put("top_logprobs", top);
        }
        return message;
    }

    /** Per-layer shares skipped, or null for a token computed densely. */
    private static JsonArray perLayer(double[] values) {
        if (values == null) return null;
        JsonArray array = new JsonArray();
        for (double value : values) array.add(value);
        return array;
    }

    private static JsonObject doneMessage(String clientId, GenerationEvent.Finish finish) {
        JsonObject message = new JsonObject()
                .put("type", "done")
                .put("id", clientId)
                .put("finish_reason", finish.reason().wireName())
                .put("usage", OpenAiFormat.usage(finish))
                .put("timing", new JsonObject()
                        .put("time_to_first_token_ms", finish.timeToFirstTokenNanos() < 0 ? null : finish.timeToFirstTokenNanos() / 1e6)
                        .put("total_ms", finish.elapsedNanos() / 1e6));
        if (finish.reason() == FinishReason.ERROR) {
            message.put("error", new ApiException(500, "server_error", null, "engine_error", finish.error()).body().getJsonObject("error"));
        }
        return message;
    }

    private void sendError(String clientId, ApiException error) {
        send(new JsonObject().put("type", "error").put("id", clientId).put("error", error.body().getJsonObject("error")));
    }

    private void send(JsonObject message) {
        if (!closed) socket.writeTextMessage(message.encode());
    }
}
