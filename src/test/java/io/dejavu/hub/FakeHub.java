package io.dejavu.hub;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;

import java.io.IOException;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.net.InetSocketAddress;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.CopyOnWriteArrayList;

/**
 * A Hugging Face hub on 127.0.0.1 serving one model repository from a directory, with the routes a download uses:
 * /api/models/{id}/revision/main and /{id}/resolve/{rev}/{file} (LFS files redirect to /lfs/{sha256}, as the hub
 * redirects to its storage), Range requests included. It records every request.
 */
final class FakeHub implements AutoCloseable {
    record Request(String method, String path, String range, String authorization) {
    }

    static final String COMMIT = "0123456789abcdef0123456789abcdef01234567";

    private final String modelId;
    private final Map<String, byte[]> files = new TreeMap<>();
    private final HttpServer server;
    final List<Request> requests = new CopyOnWriteArrayList<>();
    /** Files whose first download is cut off halfway, as a dropped connection would. */
    final Set<String> cutOnce = new HashSet<>();
    /** Whether the listing gives blob ids; without them the client asks resolve for each file's etag. */
    volatile boolean listBlobIds = true;
    /** Status to answer every request with instead of serving (401, 404...), or 0. */
    volatile int failWith;

    FakeHub(String modelId, Path directory) throws IOException {
        this.modelId = modelId;
        // Nested files are listed as the hub lists them: by their path in the repository.
        try (var tree = Files.walk(directory)) {
            for (Path f : tree.filter(Files::isRegularFile).toList()) {
                files.put(directory.relativize(f).toString().replace('\\', '/'), Files.readAllBytes(f));
            }
        }
        server = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 0);
        server.createContext("/", exchange -> {
            try (exchange) {
                handle(exchange);
            }
        });
        server.start();
    }

    URI endpoint() {
        return URI.create("http://127.0.0.1:" + server.getAddress().getPort());
    }

    byte[] file(String name) {
        return files.get(name);
    }

    static boolean isLfs(String name) {
        return name.endsWith(".safetensors") || name.endsWith(".bin");
    }

    /** The etag the hub gives a file: the sha256 of LFS files, the git blob id of others. */
    static String etag(String name, byte[] content) {
        if (isLfs(name)) return hex("SHA-256", content);
        byte[] header = ("blob " + content.length + "\0").getBytes(StandardCharsets.US_ASCII);
        byte[] blob = new byte[header.length + content.length];
        System.arraycopy(header, 0, blob, 0, header.length);
        System.arraycopy(content, 0, blob, header.length, content.length);
        return hex("SHA-1", blob);
    }

    private void handle(HttpExchange exchange) throws IOException {
        String path = exchange.getRequestURI().getPath();
        requests.add(new Request(exchange.getRequestMethod(), path, exchange.getRequestHeaders().getFirst("Range"),
                exchange.getRequestHeaders().getFirst("Authorization")));
        if (failWith != 0) {
            exchange.sendResponseHeaders(failWith, -1);
            return;
        }
        if (path.equals("/api/models/" + modelId + "/revision/main")) {
            sendJson(exchange);
            return;
        }
        String resolve = "/" + modelId + "/resolve/" + COMMIT + "/";
        if (path.startsWith(resolve) && files.containsKey(path.substring(resolve.length()))) {
            String name = path.substring(resolve.length());
            byte[] content = files.get(name);
            exchange.getResponseHeaders().add(isLfs(name) ? "X-Linked-Etag" : "ETag", "\"" + etag(name, content) + "\"");
            if (isLfs(name)) {
                exchange.getResponseHeaders().add("Location", "/lfs/" + etag(name, content) + "?name=" + name);
                exchange.sendResponseHeaders(302, -1);
                return;
            }
            sendContent(exchange, name, content);
            return;
        }
        if (path.startsWith("/lfs/")) {
            String name = exchange.getRequestURI().getQuery().substring("name=".length());
            sendContent(exchange, name, files.get(name));
            return;
        }
        exchange.sendResponseHeaders(404, -1);
    }

    private void sendJson(HttpExchange exchange) throws IOException {
        ObjectNode root = new ObjectMapper().createObjectNode().put("id", modelId).put("sha", COMMIT);
        ArrayNode siblings = root.putArray("siblings");
        files.forEach((name, content) -> {
            // For LFS files the hub's blobId is that of the pointer file; the lfs object names the content.
            ObjectNode sibling = siblings.addObject().put("rfilename", name);
            if (!listBlobIds) return;
            sibling.put("size", content.length)
                    .put("blobId", isLfs(name) ? hex("SHA-1", name.getBytes(StandardCharsets.UTF_8)) : etag(name, content));
            if (isLfs(name)) sibling.putObject("lfs").put("sha256", etag(name, content)).put("size", content.length);
        });
        byte[] body = root.toString().getBytes(StandardCharsets.UTF_8);
        exchange.getResponseHeaders().add("Content-Type", "application/json");
        exchange.sendResponseHeaders(200, body.length);
        exchange.getResponseBody().write(body);
    }

    private void sendContent(HttpExchange exchange, String name, byte[] content) throws IOException {
        if (exchange.getRequestMethod().equals("HEAD")) {
            exchange.sendResponseHeaders(200, -1);
            return;
        }
        int from = 0;
        String range = exchange.getRequestHeaders().getFirst("Range");
        if (range != null && range.matches("bytes=\\d+-")) {
            from = Integer.parseInt(range.substring(6, range.length() - 1));
            exchange.getResponseHeaders().add("Content-Range", "bytes " + from + "-" + (content.length - 1) + "/" + content.length);
            exchange.sendResponseHeaders(206, content.length - from);
        } else {
            exchange.sendResponseHeaders(200, content.length);
        }
        OutputStream out = exchange.getResponseBody();
        if (cutOnce.remove(name)) {
            // Half the promised bytes, then the connection goes away.
            out.write(content, from, (content.length - from) / 2);
            out.flush();
            pause(); // let the client read what was sent before the reset discards it
            throw new UncheckedIOException(new IOException("cut"));
        }
        out.write(content, from, content.length - from);
    }

    private static void pause() {
        try {
            Thread.sleep(200);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    private static String hex(String algorithm, byte[] bytes) {
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance(algorithm).digest(bytes));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    @Override
    public void close() {
        server.stop(0);
    }
}
