package io.dejavu.hub;

import io.dejavu.model.Checkpoint;
import io.dejavu.model.ModelLoadException;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.List;
import java.util.regex.Pattern;

/**
 * Turns a --model argument into a model directory: a directory as given, or a Hugging Face hub id
 * ({@code facebook/opt-1.3b}) resolved to its snapshot in the hub cache, downloaded first when the cache lacks it.
 */
public final class ModelLocator {
    private static final Pattern HUB_ID = Pattern.compile("[A-Za-z0-9][\\w.-]*(/[A-Za-z0-9][\\w.-]*)?");
    /** Files besides the weights that loading and tokenizing read; the ones the repository has are fetched. */
    private static final List<String> SUPPORT_FILES = List.of("config.json", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt");
    /** Weight layouts in order of preference: each an index naming shards, or a single file. */
    private static final List<String[]> WEIGHTS = List.of(
            new String[]{"model.safetensors.index.json", "model.safetensors"},
            new String[]{"pytorch_model.bin.index.json", "pytorch_model.bin"});

    private final HubSettings settings;
    private final HubCache cache;
    private final HubClient client;

    /** {@code progress} receives download progress (stderr in the CLI); null for none. */
    public ModelLocator(HubSettings settings, PrintStream progress) {
        this.settings = settings;
        this.cache = new HubCache(settings.cache());
        this.client = new HubClient(settings, progress);
    }

    public static ModelLocator fromEnvironment() {
        return new ModelLocator(HubSettings.fromEnvironment(), System.err);
    }

    /** The model directory {@code model} names: an existing directory, or the cached snapshot of a hub id. */
    public Path locate(String model) {
        Path directory = Path.of(model);
        if (Files.isDirectory(directory)) return directory;
        if (!HUB_ID.matcher(model).matches()) {
            throw new ModelLoadException(directory, "not a directory, and not a Hugging Face hub id like facebook/opt-1.3b");
        }
        String commit = cache.mainCommit(model);
        if (commit != null && isComplete(cache.snapshot(model, commit))) return cache.snapshot(model, commit);
        if (settings.offline()) {
            throw new ModelLoadException(model + " is not a directory, and the hub cache " + settings.cache()
                    + " has no complete copy of it, while HF_HUB_OFFLINE forbids downloading. Unset HF_HUB_OFFLINE to "
                    + "download it, fetch it with `huggingface-cli download " + model + "` (same cache), or pass "
                    + "--model a directory that holds config.json and the weights");
        }
        try {
            return download(model);
        } catch (IOException e) {
            throw new ModelLoadException("cannot download " + model + " from " + settings.endpoint() + ": " + e
                    + ". Check the network (or HF_ENDPOINT), run again to resume, or pass a local model directory");
        }
    }

    private Path download(String modelId) throws IOException {
        HubClient.ModelInfo info = client.modelInfo(modelId);
        if (!info.files().containsKey("config.json")) {
            throw new ModelLoadException(modelId + " on the hub has no config.json: not a transformers model repository");
        }
        for (String file : SUPPORT_FILES) {
            if (info.files().containsKey(file)) fetch(modelId, info, file);
        }
        for (String file : weightFiles(modelId, info)) fetch(modelId, info, file);
        cache.setMainCommit(modelId, info.commit());
        return cache.snapshot(modelId, info.commit());
    }

    /** The preferred weight layout the repository offers; an index is fetched first to learn its shards. */
    private List<String> weightFiles(String modelId, HubClient.ModelInfo info) throws IOException {
        for (String[] layout : WEIGHTS) {
            String index = layout[0], single = layout[1];
            if (info.files().containsKey(index)) {
                fetch(modelId, info, index);
                return List.copyOf(Checkpoint.shardsOf(cache.snapshot(modelId, info.commit()).resolve(index)));
            }
            if (info.files().containsKey(single)) return List.of(single);
        }
        throw new ModelLoadException(modelId + " on the hub has no weights this server reads (model.safetensors, "
                + "model.safetensors.index.json, pytorch_model.bin or pytorch_model.bin.index.json); files: "
                + info.files().keySet());
    }

    private void fetch(String modelId, HubClient.ModelInfo info, String file) throws IOException {
        String commit = info.commit();
        if (Files.exists(cache.snapshot(modelId, commit).resolve(file))) return;
        HubClient.RepoFile repoFile = info.files().get(file);
        if (repoFile == null) throw new ModelLoadException(modelId + " on the hub lacks " + file + ", which its index names");
        String etag = repoFile.etag() != null ? repoFile.etag() : client.etag(modelId, commit, file);
        Path blob = cache.blob(modelId, etag);
        if (!Files.exists(blob)) {
            Path partial = cache.incomplete(modelId, etag);
            Files.createDirectories(partial.getParent());
            client.download(modelId, commit, file, repoFile.size(), partial);
            Files.move(partial, blob, StandardCopyOption.ATOMIC_MOVE);
        }
        cache.link(modelId, commit, file, etag);
    }

    /** A snapshot serves without the network when it has config.json and every weight file of a layout. */
    private static boolean isComplete(Path snapshot) {
        if (!Files.isRegularFile(snapshot.resolve("config.json"))) return false;
        for (String[] layout : WEIGHTS) {
            Path index = snapshot.resolve(layout[0]);
            if (Files.isRegularFile(index)) {
                try {
                    return Checkpoint.shardsOf(index).stream().allMatch(shard -> Files.isRegularFile(snapshot.resolve(shard)));
                } catch (ModelLoadException e) {
                    return false;
                }
            }
            if (Files.isRegularFile(snapshot.resolve(layout[1]))) return true;
        }
        return false;
    }
}
