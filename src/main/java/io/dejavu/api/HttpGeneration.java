package io.dejavu.api;

import io.dejavu.generation.FinishReason;
import io.dejavu.scheduler.GenerationEvent;
import io.vertx.core.http.HttpServerResponse;
import io.vertx.core.json.JsonObject;

import java.util.ArrayList;
import java.util.List;

/**
 * One POST /v1/completions or /v1/chat/completions request from submission to its answer: one JSON object, or
 * Server-Sent Events (a chunk per text delta, the finish reason, optionally the usage, then "data: [DONE]").
 * A client that goes away cancels the generation, which frees its batch slot at the next engine step.
 * Runs on one event loop.
 */
final class HttpGeneration {
    private final HttpServerResponse response;
    private final OpenAiFormat format;
    private final OpenAiFormat.Identity identity;
    private final RequestReader.ApiRequest request;
    private final StringBuilder text = new StringBuilder();
    /** Tokens not yet reported, when logprobs were asked for. */
    private final List<GenerationEvent.Token> tokens = new ArrayList<>();
    private EngineClient.Submitted submitted;
    private boolean closed;
    private boolean streamStarted;

    private HttpGeneration(HttpServerResponse response, OpenAiFormat format, RequestReader.ApiRequest request,
                           String requestId) {
        this.response = response;
        this.format = format;
        this.request = request;
        this.identity = OpenAiFormat.Identity.of(request.endpoint(), requestId);
    }

    static void start(HttpServerResponse response, OpenAiFormat format, EngineClient engine,
                      RequestReader.ApiRequest request, ErrorReply errors) {
        String id = EngineClient.newRequestId();
        HttpGeneration generation = new HttpGeneration(response, format, request, id);
        response.closeHandler(v -> generation.clientGone());
        engine.submit(id, request.promptIds(), request.params(), request.sparse(), generation::on)
                .onSuccess(generation::accepted)
                .onFailure(errors::send);
    }

    /** How a refused request is answered (429, 503, ...). */
    interface ErrorReply {
        void send(Throwable failure);
    }

    private void accepted(EngineClient.Submitted submitted) {
        this.submitted = submitted;
        if (closed) submitted.cancel();
        else if (request.stream()) startStream();
    }

    private void clientGone() {
        closed = true;
        if (submitted != null) submitted.cancel();
    }

    private void on(GenerationEvent event) {
        if (closed) return;
        switch (event) {
            case GenerationEvent.Token token -> onToken(token);
            case GenerationEvent.Finish finish -> onFinish(finish);
        }
    }

    private void onToken(GenerationEvent.Token token) {
        if (request.params().logprobs()) tokens.add(token);
        if (!request.stream()) {
            text.append(token.text());
            return;
        }
        // Text held back (a possible stop sequence, half a UTF-8 character) waits for the next token's chunk.
        if (token.text().isEmpty() && tokens.isEmpty()) return;
        sendChunk(token.text(), null);
    }

    private void onFinish(GenerationEvent.Finish finish) {
        if (!request.stream()) {
            if (finish.reason() == FinishReason.ERROR) {
                sendError(engineError(finish));
            } else {
                response.putHeader("Content-Type", "application/json")
                        .end(format.whole(identity, text.toString(), finish,
                                request.params().logprobs() ? tokens : null).encode());
            }
            return;
        }
        startStream();
        if (finish.reason() == FinishReason.ERROR) {
            writeEvent(engineError(finish).body());
        } else {
            sendChunk(null, finish.reason());
            if (request.includeUsage()) writeEvent(format.usageChunk(identity, finish));
        }
        response.end("data: [DONE]\n\n");
    }

    private void sendChunk(String delta, FinishReason finish) {
        startStream();
        List<GenerationEvent.Token> reported = request.params().logprobs() && !tokens.isEmpty() ? List.copyOf(tokens) : null;
        writeEvent(format.chunk(identity, delta, false, finish, reported, text.length()));
        if (delta != null) text.append(delta);
        tokens.clear();
    }

    /** The SSE headers, and for chat the first chunk naming the assistant role, as OpenAI sends them. */
    private void startStream() {
        if (streamStarted) return;
        streamStarted = true;
        response.setChunked(true)
                .putHeader("Content-Type", "text/event-stream")
                .putHeader("Cache-Control", "no-cache")
                .putHeader("X-Accel-Buffering", "no");
        if (identity.endpoint() == Endpoint.CHAT) writeEvent(format.chunk(identity, "", true, null, null, 0));
    }

    private void writeEvent(JsonObject data) {
        response.write("data: " + data.encode() + "\n\n");
    }

    private void sendError(ApiException error) {
        response.setStatusCode(error.status()).putHeader("Content-Type", "application/json").end(error.body().encode());
    }

    private static ApiException engineError(GenerationEvent.Finish finish) {
        return new ApiException(500, "server_error", null, "engine_error", finish.error());
    }
}
