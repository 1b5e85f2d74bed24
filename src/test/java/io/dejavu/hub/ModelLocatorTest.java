package io.dejavu.hub;

import io.dejavu.model.ModelLoadException;
import io.dejavu.model.OptModel;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.net.URI;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.*;

class ModelLocatorTest {
    private static final String MODEL = "test-org/opt-demo";
    private static final Path OPT_DEMO = Path.of("models/opt-demo");
    private static final String SHARD = "model-00001-of-00002.safetensors";

    @TempDir
    Path cache;
    private FakeHub hub;

    @BeforeEach
    void startHub() throws IOException {
        hub = new FakeHub(MODEL, OPT_DEMO);
    }

    @AfterEach
    void stopHub() {
        hub.close();
    }

    private ModelLocator locator(String token, boolean offline) {
        return new ModelLocator(new HubSettings(cache, hub.endpoint(), token, offline), null);
    }

    @Test
    void downloadsIntoTheHubCacheLayoutThenServesFromIt() throws IOException {
        Path snapshot = locator("hf_secret", false).locate(MODEL);

        Path repo = cache.resolve("models--test-org--opt-demo");
        assertEquals(repo.resolve("snapshots").resolve(FakeHub.COMMIT), snapshot);
        assertEquals(FakeHub.COMMIT, Files.readString(repo.resolve("refs/main")));
        for (String file : List.of("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                "vocab.json", "merges.txt", "model.safetensors.index.json", SHARD, "model-00002-of-00002.safetensors")) {
            Path link = snapshot.resolve(file);
            String etag = FakeHub.etag(file, hub.file(file));
            assertTrue(Files.isSymbolicLink(link), file);
            assertEquals(Path.of("../../blobs/" + etag), Files.readSymbolicLink(link), file);
            assertArrayEquals(hub.file(file), Files.readAllBytes(link), file);
        }
        assertFalse(Files.exists(snapshot.resolve("train_stats.json")), "only the files serving needs");
        try (var blobs = Files.list(repo.resolve("blobs"))) {
            assertTrue(blobs.noneMatch(b -> b.toString().endsWith(".incomplete")));
        }
        try (OptModel model = OptModel.load(snapshot)) {
            assertEquals(256, model.config().hiddenSize());
            assertEquals(8, model.weights().layers().size());
        }
        assertTrue(hub.requests.stream().allMatch(r -> "Bearer hf_secret".equals(r.authorization())), hub.requests.toString());

        int before = hub.requests.size();
        assertEquals(snapshot, locator("hf_secret", false).locate(MODEL));
        assertEquals(snapshot, locator(null, true).locate(MODEL), "a complete cache serves offline");
        assertEquals(before, hub.requests.size(), "a cached model needs no request");
    }

    @Test
    void resumesAnInterruptedDownloadWithARangeRequest() throws IOException {
        hub.cutOnce.add(SHARD);
        Path snapshot = locator(null, false).locate(MODEL);

        List<FakeHub.Request> shardGets = hub.requests.stream().filter(r -> r.path().startsWith("/lfs/")
                && r.path().endsWith(FakeHub.etag(SHARD, hub.file(SHARD)))).toList();
        assertEquals(2, shardGets.size(), shardGets.toString());
        assertNull(shardGets.get(0).range());
        // The client resumes from what reached its disk: some, at most the half the server sent before the cut.
        String range = shardGets.get(1).range();
        assertTrue(range != null && range.matches("bytes=\\d+-"), range);
        long resumedAt = Long.parseLong(range.substring(6, range.length() - 1));
        assertTrue(resumedAt > 0 && resumedAt <= hub.file(SHARD).length / 2, range);
        assertArrayEquals(hub.file(SHARD), Files.readAllBytes(snapshot.resolve(SHARD)));
        assertTrue(hub.requests.stream().allMatch(r -> r.authorization() == null), "no token, no Authorization header");
        try (OptModel model = OptModel.load(snapshot)) {
            assertEquals(8192, model.config().vocabSize());
        }
    }

    @Test
    void namesBlobsByTheResolveEtagWhenTheListingHasNoIds() throws IOException {
        hub.listBlobIds = false;
        Path snapshot = locator(null, false).locate(MODEL);
        assertEquals(Path.of("../../blobs/" + FakeHub.etag(SHARD, hub.file(SHARD))), Files.readSymbolicLink(snapshot.resolve(SHARD)));
        assertEquals(Path.of("../../blobs/" + FakeHub.etag("config.json", hub.file("config.json"))),
                Files.readSymbolicLink(snapshot.resolve("config.json")));
        assertArrayEquals(hub.file(SHARD), Files.readAllBytes(snapshot.resolve(SHARD)));
        assertTrue(hub.requests.stream().anyMatch(r -> r.method().equals("HEAD")));
    }

    @Test
    void offlineWithoutCacheSaysWhatToDo() {
        String message = assertThrows(ModelLoadException.class, () -> locator(null, true).locate(MODEL)).getMessage();
        assertTrue(message.contains(MODEL) && message.contains("HF_HUB_OFFLINE") && message.contains("huggingface-cli download")
                && message.contains("directory"), message);
        assertTrue(hub.requests.isEmpty());
    }

    @Test
    void unknownAndUnauthorizedModelsNameTheIdAndTheRemedy() {
        hub.failWith = 404;
        String notFound = assertThrows(ModelLoadException.class, () -> locator(null, false).locate("test-org/nope")).getMessage();
        assertTrue(notFound.contains("test-org/nope") && notFound.contains("404") && notFound.contains("Check the id"), notFound);
        hub.failWith = 401;
        String unauthorized = assertThrows(ModelLoadException.class, () -> locator(null, false).locate("test-org/gated")).getMessage();
        assertTrue(unauthorized.contains("test-org/gated") && unauthorized.contains("401") && unauthorized.contains("set HF_TOKEN"), unauthorized);
    }

    @Test
    void aDirectoryIsUsedAsIsAndNonsenseIsRefused() {
        assertEquals(OPT_DEMO, locator(null, false).locate(OPT_DEMO.toString()));
        String message = assertThrows(ModelLoadException.class, () -> locator(null, false).locate("no such/dir/x")).getMessage();
        assertTrue(message.contains("no such/dir/x") && message.contains("not a directory"), message);
        assertTrue(hub.requests.isEmpty());
    }

    @Test
    void settingsFollowTheHuggingFaceHubVariables(@TempDir Path home) throws IOException {
        HubSettings defaults = HubSettings.fromEnvironment(Map.<String, String>of()::get, home);
        assertEquals(home.resolve(".cache/huggingface/hub"), defaults.cache());
        assertEquals(URI.create("https://huggingface.co"), defaults.endpoint());
        assertNull(defaults.token());
        assertFalse(defaults.offline());

        Files.createDirectories(home.resolve("hf"));
        Files.writeString(home.resolve("hf/token"), "hf_from_login\n");
        HubSettings hfHome = HubSettings.fromEnvironment(Map.of("HF_HOME", home.resolve("hf").toString(),
                "HF_HUB_OFFLINE", "1", "HF_ENDPOINT", "http://mirror.local/")::get, home);
        assertEquals(home.resolve("hf/hub"), hfHome.cache());
        assertEquals("hf_from_login", hfHome.token());
        assertTrue(hfHome.offline());
        assertEquals(URI.create("http://mirror.local"), hfHome.endpoint());

        HubSettings explicit = HubSettings.fromEnvironment(Map.of("HF_HOME", home.resolve("hf").toString(),
                "HF_HUB_CACHE", "/data/hub", "HF_TOKEN", "hf_env", "HF_HUB_OFFLINE", "0")::get, home);
        assertEquals(Path.of("/data/hub"), explicit.cache());
        assertEquals("hf_env", explicit.token());
        assertFalse(explicit.offline());
    }
}
