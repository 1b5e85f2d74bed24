package io.dejavu.hub;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.dejavu.model.ModelLoadException;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.net.URI;
import java.net.URISyntaxException;
import java.net.http.HttpClient;
import java.net.http.HttpHeaders;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Optional;

/** The few Hugging Face hub routes a model download needs: the model's file list and resolving a file. */
final class HubClient {
    /** A file of the repository; etag names its blob in the cache (null when the listing gave none). */
    record RepoFile(long size, String etag) {
    }

    /** The commit main points to and the files it holds, by path. */
    record ModelInfo(String commit, Map<String, RepoFile> files) {
    }

    private static final ObjectMapper JSON = new ObjectMapper();
    private static final int MAX_REDIRECTS = 5;
    private static final int ATTEMPTS = 5;
    private static final long RETRY_PAUSE_MILLIS = 200;

    private final HubSettings settings;
    private final PrintStream progress;
    private final HttpClient http = HttpClient.newBuilder()
            .connectTimeout(Duration.ofSeconds(30))
            // Followed by hand: the token must not travel to the storage host that resolve redirects to.
            .followRedirects(HttpClient.Redirect.NEVER)
            .build();

    HubClient(HubSettings settings, PrintStream progress) {
        this.settings = settings;
        this.progress = progress;
    }

    ModelInfo modelInfo(String modelId) throws IOException {
        URI uri = uri("/api/models/" + modelId + "/revision/main", "blobs=true");
        HttpResponse<String> response = send(uri, "GET", null, HttpResponse.BodyHandlers.ofString(), true);
        check(response, modelId, null);
        JsonNode root = JSON.readTree(response.body());
        String commit = root.path("sha").asText(null);
        if (commit == null || !root.path("siblings").isArray()) {
            throw new ModelLoadException("hub answer for " + modelId + " from " + uri + " has no sha and siblings; is "
                    + settings.endpoint() + " a Hugging Face hub (HF_ENDPOINT)?");
        }
        Map<String, RepoFile> files = new LinkedHashMap<>();
        for (JsonNode sibling : root.get("siblings")) {
            JsonNode lfs = sibling.path("lfs");
            String etag = lfs.has("sha256") ? lfs.get("sha256").asText() : sibling.path("blobId").asText(null);
            long size = lfs.has("size") ? lfs.get("size").asLong() : sibling.path("size").asLong(-1);
            files.put(sibling.path("rfilename").asText(), new RepoFile(size, etag));
        }
        return new ModelInfo(commit, files);
    }

    /** The etag of a file from the headers of resolve, as huggingface_hub names blobs (for listings without ids). */
    String etag(String modelId, String commit, String file) throws IOException {
        HttpResponse<Void> response = send(resolve(modelId, commit, file), "HEAD", null, HttpResponse.BodyHandlers.discarding(), false);
        if (response.statusCode() / 100 != 3) check(response, modelId, file);
        Optional<String> etag = response.headers().firstValue("X-Linked-Etag").or(() -> response.headers().firstValue("ETag"));
        return etag.map(e -> e.replaceFirst("^W/", "").replace("\"", ""))
                .orElseThrow(() -> new ModelLoadException("hub gave no ETag for " + file + " of " + modelId));
    }

    /**
     * Downloads {@code file} into {@code partial}, resuming what an earlier attempt left there with a Range request,
     * and retrying when the connection drops. Returns once {@code partial} holds the whole file.
     */
    void download(String modelId, String commit, String file, long size, Path partial) throws IOException {
        URI uri = resolve(modelId, commit, file);
        IOException last = null;
        for (int attempt = 1; attempt <= ATTEMPTS; attempt++) {
            long have = Files.exists(partial) ? Files.size(partial) : 0;
            if (size >= 0 && have == size) return;
            if (size >= 0 && have > size) {
                Files.delete(partial); // not a prefix of this file: start over
                have = 0;
            }
            try {
                if (fetch(modelId, file, uri, size, partial, have)) return;
            } catch (IOException e) {
                last = e;
            }
            if (progress != null) {
                progress.printf("%n%s: connection lost at %s, resuming (attempt %d of %d)%n", file,
                        DownloadProgress.bytes(Files.exists(partial) ? Files.size(partial) : 0), attempt + 1, ATTEMPTS);
            }
            pause(attempt);
        }
        throw new ModelLoadException("downloading " + file + " of " + modelId + " from " + uri + " failed " + ATTEMPTS
                + " times" + (last != null ? " (" + last.getMessage() + ")" : "") + "; run the command again to resume");
    }

    /** One attempt; true when the file is complete. */
    private boolean fetch(String modelId, String file, URI uri, long size, Path partial, long have) throws IOException {
        String range = have > 0 ? "bytes=" + have + "-" : null;
        HttpResponse<InputStream> response = send(uri, "GET", range, HttpResponse.BodyHandlers.ofInputStream(), true);
        try (InputStream body = response.body()) {
            if (response.statusCode() == 416 && have > 0 && size < 0) return true; // nothing left past what we have
            check(response, modelId, file);
            boolean resumed = response.statusCode() == 206 && contentRangeStart(response.headers()) == have;
            long total = size >= 0 ? size : response.headers().firstValueAsLong("Content-Length").orElse(-1) + (resumed ? have : 0);
            DownloadProgress bar = new DownloadProgress(progress, modelId + " " + file, total, resumed ? have : 0);
            try (OutputStream out = Files.newOutputStream(partial, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                    resumed ? StandardOpenOption.APPEND : StandardOpenOption.TRUNCATE_EXISTING)) {
                byte[] buffer = new byte[1 << 16];
                for (int n; (n = body.read(buffer)) >= 0; ) {
                    out.write(buffer, 0, n);
                    bar.advance(n);
                }
            }
            bar.finish();
        }
        return size < 0 || Files.size(partial) == size;
    }

    private static long contentRangeStart(HttpHeaders headers) {
        // "bytes <start>-<end>/<total>"
        return headers.firstValue("Content-Range").map(v -> v.replaceFirst("^bytes\\s+(\\d+)-.*$", "$1"))
                .filter(v -> v.matches("\\d+")).map(Long::parseLong).orElse(-1L);
    }

    private <T> HttpResponse<T> send(URI uri, String method, String range, HttpResponse.BodyHandler<T> handler,
                                     boolean followRedirects) throws IOException {
        URI target = uri;
        for (int hop = 0; ; hop++) {
            HttpRequest.Builder request = HttpRequest.newBuilder(target).method(method, HttpRequest.BodyPublishers.noBody())
                    .header("User-Agent", "dejavu-serve");
            // The token goes to the hub only, not to a storage host resolve redirects to (its URL is presigned).
            if (settings.token() != null && sameOrigin(target, settings.endpoint())) {
                request.header("Authorization", "Bearer " + settings.token());
            }
            if (range != null) request.header("Range", range);
            HttpResponse<T> response;
            try {
                response = http.send(request.build(), handler);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IOException("interrupted", e);
            }
            Optional<String> location = response.headers().firstValue("Location");
            if (!followRedirects || response.statusCode() / 100 != 3 || location.isEmpty()) return response;
            if (hop == MAX_REDIRECTS) throw new IOException("more than " + MAX_REDIRECTS + " redirects from " + uri);
            if (response.body() instanceof InputStream in) in.close();
            target = target.resolve(location.get());
        }
    }

    /** Passes 200 and 206; otherwise says what went wrong with {@code file} of the model (null: its listing). */
    private void check(HttpResponse<?> response, String modelId, String file) {
        int status = response.statusCode();
        if (status == 200 || status == 206) return;
        if (response.body() instanceof InputStream in) {
            try {
                in.close();
            } catch (IOException ignored) {
                // the status decides what to report
            }
        }
        String page = settings.endpoint() + "/" + modelId;
        String what = file == null ? "the file list" : file;
        throw new ModelLoadException(switch (status) {
            case 401, 403 -> "hub refused " + what + " of " + modelId + " (HTTP " + status + "): the repository does not "
                    + "exist, or it is private or gated. Check the id at " + page + "; for a gated or private model, "
                    + "accept its terms there and " + (settings.token() == null ? "set HF_TOKEN to an access token "
                    + "(https://huggingface.co/settings/tokens)" : "check that HF_TOKEN grants access to it");
            case 404 -> "hub has no " + (file == null ? "model " + modelId : "file " + file + " in " + modelId)
                    + " (HTTP 404 from " + settings.endpoint() + "). Check the id; if you meant a local directory, "
                    + "it does not exist";
            default -> "hub answered HTTP " + status + " for " + what + " of " + modelId + " from " + settings.endpoint()
                    + "; try again later, or download the model with huggingface-cli and pass its directory";
        });
    }

    private URI resolve(String modelId, String commit, String file) {
        return uri("/" + modelId + "/resolve/" + commit + "/" + file, null);
    }

    private URI uri(String path, String query) {
        URI base = settings.endpoint();
        try {
            return new URI(base.getScheme(), base.getAuthority(), base.getPath() + path, query, null);
        } catch (URISyntaxException e) {
            throw new ModelLoadException("cannot form a hub URL from HF_ENDPOINT " + base + " and " + path);
        }
    }

    private static boolean sameOrigin(URI a, URI b) {
        return a.getScheme().equalsIgnoreCase(b.getScheme()) && a.getAuthority().equalsIgnoreCase(b.getAuthority());
    }

    private static void pause(int attempt) {
        try {
            Thread.sleep(RETRY_PAUSE_MILLIS * attempt);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
