package io.dejavu.api;

import io.dejavu.config.ServiceConfig;
import io.vertx.core.Future;
import io.vertx.core.VerticleBase;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.HttpServer;
import io.vertx.core.http.HttpServerOptions;
import io.netty.handler.codec.http.QueryStringDecoder;
import io.vertx.core.http.ServerWebSocket;
import io.vertx.core.http.ServerWebSocketHandshake;
import io.vertx.core.json.JsonObject;
import io.vertx.ext.web.Router;
import io.vertx.ext.web.RoutingContext;
import io.vertx.ext.web.handler.BodyHandler;
import io.vertx.ext.web.handler.CorsHandler;
import io.vertx.ext.web.handler.FileSystemAccess;
import io.vertx.ext.web.handler.StaticHandler;

import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;

/**
 * The HTTP and WebSocket front: the OpenAI-compatible API, /ws, /health, /metrics and the static webroot.
 * Deployed as several instances sharing one port (Vert.x spreads connections over them); each parses and
 * tokenizes its requests on its event loop and talks to the engine only over the event bus.
 */
public final class HttpApiVerticle extends VerticleBase {
    private static final int WEBSOCKET_GOING_AWAY = 1001;

    private final ApiContext api;
    private final Set<ServerWebSocket> sockets = new HashSet<>();
    private HttpServer server;
    private RequestReader reader;
    private OpenAiFormat format;
    private EngineClient engine;
    private ApiKeys keys;

    public HttpApiVerticle(ApiContext api) {
        this.api = api;
    }

    @Override
    public Future<?> start() {
        ServiceConfig config = api.config();
        reader = new RequestReader(api.tokenizer(), api.modelConfig(), api.modelName(), config.maxPromptTokens(),
                config.maxOutputTokens(), api.sparseAvailable(), config.sparseDefault());
        format = new OpenAiFormat(api.tokenizer(), api.modelName());
        engine = new EngineClient(vertx);
        keys = new ApiKeys(config.apiKeys());

        Router router = Router.router(vertx);
        if (!config.corsOrigins().isEmpty()) router.route().handler(cors(config.corsOrigins()));
        router.get("/health").handler(this::health);
        router.get("/metrics").handler(ctx -> ctx.response()
                .putHeader("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                .end(api.metrics().render()));
        router.route("/v1/*").handler(this::authenticate);
        router.get("/v1/models").handler(ctx -> json(ctx, 200, format.models(System.currentTimeMillis() / 1000)));
        router.get("/v1/models/:id").handler(this::model);
        BodyHandler body = BodyHandler.create(false).setBodyLimit(config.maxBodyBytes());
        router.post("/v1/completions").handler(body).handler(ctx -> generate(ctx, Endpoint.COMPLETIONS));
        router.post("/v1/chat/completions").handler(body).handler(ctx -> generate(ctx, Endpoint.CHAT));
        // Static files everywhere but under the API, so that a wrong method on an API path is a 405, not a 404.
        router.routeWithRegex(HttpMethod.GET, "^/(?!v1/).*")
                // The playground's files have no version in their names: a browser must not keep an old page or
                // module for a day after an upgrade (Vert.x's default is "immutable, max-age=86400").
                .handler(StaticHandler.create(FileSystemAccess.ROOT, config.webroot().toAbsolutePath().toString())
                        .setCachingEnabled(false));
        router.route().failureHandler(this::failure);
        router.errorHandler(404, ctx -> error(ctx, new ApiException(404, "invalid_request_error", null, "not_found",
                "no such endpoint: " + ctx.request().method() + " " + ctx.request().path())));
        router.errorHandler(405, ctx -> error(ctx, new ApiException(405, "invalid_request_error", null,
                "method_not_allowed", ctx.request().method() + " is not allowed on " + ctx.request().path())));

        HttpServerOptions options = new HttpServerOptions()
                .setHost(config.host())
                .setPort(config.port())
                // Vert.x closes a connection whose message passes its limit; ours answers with an error message
                // and keeps the connection, so Vert.x's hard limit sits above it.
                .setMaxWebSocketFrameSize(hardLimit(config.maxFrameBytes()))
                .setMaxWebSocketMessageSize(hardLimit(config.maxFrameBytes()));
        return vertx.createHttpServer(options)
                .requestHandler(router)
                .webSocketHandshakeHandler(this::handshake)
                .webSocketHandler(this::webSocket)
                .listen()
                .onSuccess(s -> server = s);
    }

    private static int hardLimit(int limit) {
        return (int) Math.min(4L * limit, Integer.MAX_VALUE);
    }

    /** Closes the WebSockets with "going away" so clients know to reconnect elsewhere, then the server. */
    @Override
    public Future<?> stop() {
        List<Future<Void>> closing = new ArrayList<>();
        for (ServerWebSocket socket : List.copyOf(sockets)) {
            closing.add(socket.close((short) WEBSOCKET_GOING_AWAY, "server shutting down"));
        }
        return Future.join(closing).transform(v -> server == null ? Future.succeededFuture() : server.close());
    }

    private static CorsHandler cors(List<String> origins) {
        CorsHandler cors = CorsHandler.create()
                .allowedMethods(Set.of(HttpMethod.GET, HttpMethod.POST, HttpMethod.OPTIONS))
                .allowedHeaders(Set.of("Content-Type", "Authorization"));
        return origins.contains("*") ? cors.addOriginWithRegex(".*") : cors.addOrigins(origins);
    }

    private void authenticate(RoutingContext ctx) {
        if (!keys.required() || keys.accepts(ctx.request().getHeader("Authorization"))) {
            ctx.next();
            return;
        }
        ctx.response().putHeader("WWW-Authenticate", "Bearer");
        error(ctx, unauthorized());
    }

    private static ApiException unauthorized() {
        return new ApiException(401, "authentication_error", null, "invalid_api_key",
                "a valid API key is required: send the header 'Authorization: Bearer <key>'");
    }

    private void generate(RoutingContext ctx, Endpoint endpoint) {
        api.metrics().requestReceived(endpoint.label);
        RequestReader.ApiRequest request = reader.read(RequestReader.parse(ctx.body().asString()), endpoint);
        HttpGeneration.start(ctx.response(), format, engine, request, failure -> ctx.fail(failure));
    }

    /** WebSockets authenticate with the Authorization header, or with ?api_key= where a browser cannot set it. */
    private void handshake(ServerWebSocketHandshake handshake) {
        if (!handshake.path().equals("/ws")) {
            handshake.reject(404);
        } else if (keys.required() && !keys.accepts(handshake.headers().get("Authorization"))
                && !keys.acceptsKey(new QueryStringDecoder(handshake.uri()).parameters()
                .getOrDefault("api_key", List.of()).stream().findFirst().orElse(null))) {
            api.metrics().error("invalid_api_key");
            handshake.reject(401);
        } else {
            handshake.accept();
        }
    }

    /** Called on the connection's event loop as the handshake completes, before any message is read. */
    private void webSocket(ServerWebSocket socket) {
        sockets.add(socket);
        new WebSocketSession(socket, reader, engine, format, api.metrics(), api.config().maxFrameBytes())
                .start(() -> sockets.remove(socket));
    }

    /** OpenAI's model object, with the model card (shape, size, engine, sparsity) under "card". */
    private void model(RoutingContext ctx) {
        String id = ctx.pathParam("id");
        if (!id.equals(api.modelName())) {
            throw new ApiException(404, "invalid_request_error", "model", "model_not_found",
                    "the model '" + id + "' does not exist; this server serves '" + api.modelName() + "'");
        }
        json(ctx, 200, format.models(System.currentTimeMillis() / 1000).getJsonArray("data").getJsonObject(0)
                .put("card", ModelCard.of(api)));
    }

    private void health(RoutingContext ctx) {
        EngineStatus status = api.engineStatus().get();
        JsonObject body = new JsonObject()
                .put("status", status.ready() ? "ok" : status.state())
                .put("live", true)
                .put("ready", status.ready())
                .put("model", api.modelName())
                .put("engine", new JsonObject()
                        .put("state", status.state())
                        .put("backend", status.backend())
                        .put("message", status.message())
                        .put("running", status.running())
                        .put("queued", status.queued())
                        .put("max_batch_size", status.maxBatchSize()));
        json(ctx, status.ready() ? 200 : 503, body);
    }

    private void failure(RoutingContext ctx) {
        Throwable failure = ctx.failure();
        ApiException error;
        if (failure instanceof ApiException api) {
            error = api;
        } else if (ctx.statusCode() == 413) {
            error = new ApiException(413, "invalid_request_error", null, "body_too_large",
                    "the request body is larger than the limit of " + api.config().maxBodyBytes() + " bytes");
        } else if (ctx.statusCode() >= 400 && ctx.statusCode() < 500) {
            error = new ApiException(ctx.statusCode(), "invalid_request_error", null, null, "the request was refused");
        } else {
            System.err.println("dejavu: internal error on " + ctx.request().method() + " " + ctx.request().path());
            if (failure != null) failure.printStackTrace();
            error = new ApiException(500, "server_error", null, "internal_error", "internal server error");
        }
        if (error.status() == 429) ctx.response().putHeader("Retry-After", "1");
        error(ctx, error);
    }

    private void error(RoutingContext ctx, ApiException error) {
        api.metrics().error(error.kind());
        if (ctx.response().headWritten()) {
            // A stream has begun: the error can only end it.
            ctx.response().reset();
            return;
        }
        json(ctx, error.status(), error.body());
    }

    private static void json(RoutingContext ctx, int status, JsonObject body) {
        ctx.response().setStatusCode(status).putHeader("Content-Type", "application/json").end(body.encode());
    }
}
