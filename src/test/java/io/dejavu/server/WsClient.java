package io.dejavu.server;

import io.vertx.core.Vertx;
import io.vertx.core.http.WebSocket;
import io.vertx.core.http.WebSocketClient;
import io.vertx.core.http.WebSocketClientOptions;
import io.vertx.core.http.WebSocketConnectOptions;
import io.vertx.core.json.JsonObject;

import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertNotNull;

/** A test's WebSocket connection to /ws: sends JSON messages, and hands the server's messages over in order. */
final class WsClient implements AutoCloseable {
    /** Held so that it is not collected: Vert.x closes the connections of a client that becomes unreachable. */
    private final WebSocketClient client;
    private final WebSocket socket;
    private final BlockingQueue<JsonObject> received = new LinkedBlockingQueue<>();
    volatile boolean closed;
    volatile Short closeStatus;

    private WsClient(WebSocketClient client, WebSocket socket) {
        this.client = client;
        this.socket = socket;
        socket.textMessageHandler(text -> received.add(new JsonObject(text)));
        socket.closeHandler(v -> {
            closeStatus = socket.closeStatusCode();
            closed = true;
        });
    }

    static WsClient connect(Vertx vertx, int port, String uri, String authorization) throws Exception {
        return connect(vertx, port, uri, authorization, new WebSocketClientOptions());
    }

    /** @param clientOptions the client's options, e.g. the largest frame it sends (longer messages go in several) */
    static WsClient connect(Vertx vertx, int port, String uri, String authorization, WebSocketClientOptions clientOptions)
            throws Exception {
        WebSocketConnectOptions options = new WebSocketConnectOptions().setHost("127.0.0.1").setPort(port).setURI(uri);
        if (authorization != null) options.addHeader("Authorization", authorization);
        WebSocketClient client = vertx.createWebSocketClient(clientOptions);
        WebSocket socket = client.connect(options).toCompletionStage().toCompletableFuture().get(10, TimeUnit.SECONDS);
        return new WsClient(client, socket);
    }

    static WsClient connect(Vertx vertx, int port) throws Exception {
        return connect(vertx, port, "/ws", null);
    }

    void send(JsonObject message) {
        socket.writeTextMessage(message.encode());
    }

    void sendText(String text) {
        socket.writeTextMessage(text);
    }

    JsonObject next() throws InterruptedException {
        JsonObject message = received.poll(60, TimeUnit.SECONDS);
        assertNotNull(message, "no message from the server within 60 s");
        return message;
    }

    /** The next message of a type, skipping others. */
    JsonObject next(String type) throws InterruptedException {
        while (true) {
            JsonObject message = next();
            if (message.getString("type").equals(type)) return message;
        }
    }

    @Override
    public void close() throws Exception {
        if (!closed) socket.close().toCompletionStage().toCompletableFuture().get(10, TimeUnit.SECONDS);
        client.close();
    }
}
