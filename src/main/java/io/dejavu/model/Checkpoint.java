package io.dejavu.model;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;

/**
 * All tensors of a model directory, whatever layout it was published in: one model.safetensors, shards listed by
 * model.safetensors.index.json, or the PyTorch pytorch_model.bin files. The files stay mapped until {@link #close()}.
 */
public final class Checkpoint implements AutoCloseable {
    private static final ObjectMapper JSON = new ObjectMapper();

    private final Path directory;
    private final Arena arena;
    private final Map<String, Tensor> tensors;

    private Checkpoint(Path directory, Arena arena, Map<String, Tensor> tensors) {
        this.directory = directory;
        this.arena = arena;
        this.tensors = Collections.unmodifiableMap(tensors);
    }

    public static Checkpoint open(Path directory) {
        Arena arena = Arena.ofShared();
        try {
            return new Checkpoint(directory, arena, readAll(directory, arena));
        } catch (RuntimeException e) {
            arena.close();
            throw e;
        }
    }

    private static Map<String, Tensor> readAll(Path dir, Arena arena) {
        Path single = dir.resolve("model.safetensors");
        Path index = dir.resolve("model.safetensors.index.json");
        Path torchSingle = dir.resolve("pytorch_model.bin");
        Path torchIndex = dir.resolve("pytorch_model.bin.index.json");
        if (Files.isRegularFile(index)) return readSharded(index, arena, SafetensorsFile::read);
        if (Files.isRegularFile(single)) return SafetensorsFile.read(single, arena);
        if (Files.isRegularFile(torchIndex)) return readSharded(torchIndex, arena, TorchCheckpointFile::read);
        if (Files.isRegularFile(torchSingle)) return TorchCheckpointFile.read(torchSingle, arena);
        throw new ModelLoadException(dir, "no weights found: expected model.safetensors, model.safetensors.index.json, "
                + "pytorch_model.bin or pytorch_model.bin.index.json");
    }

    private interface ShardReader {
        Map<String, Tensor> read(Path file, Arena arena);
    }

    /** Reads every shard named in the index's weight_map and checks that each tensor is where the index says. */
    private static Map<String, Tensor> readSharded(Path index, Arena arena, ShardReader reader) {
        JsonNode weightMap = weightMap(index);
        Map<String, Tensor> all = new LinkedHashMap<>();
        for (String shard : shardsOf(index)) {
            Path file = index.resolveSibling(shard);
            if (!Files.isRegularFile(file)) throw new ModelLoadException(file, "shard named in " + index.getFileName() + " is missing");
            all.putAll(reader.read(file, arena));
        }
        weightMap.properties().forEach(e -> {
            if (!all.containsKey(e.getKey())) {
                throw new ModelLoadException(index.resolveSibling(e.getValue().asText()),
                        "tensor " + e.getKey() + " is listed in " + index.getFileName() + " but missing from the shard");
            }
        });
        return all;
    }

    /** The shard files that the weight_map of {@code index} (a *.index.json) names. */
    public static Set<String> shardsOf(Path index) {
        Set<String> shards = new TreeSet<>();
        weightMap(index).properties().forEach(e -> shards.add(e.getValue().asText()));
        return shards;
    }

    private static JsonNode weightMap(Path index) {
        JsonNode weightMap;
        try {
            weightMap = JSON.readTree(index.toFile()).get("weight_map");
        } catch (IOException e) {
            throw new ModelLoadException(index, "malformed index: " + e.getMessage(), e);
        }
        if (weightMap == null || !weightMap.isObject()) {
            throw new ModelLoadException(index, "malformed index: no weight_map object");
        }
        return weightMap;
    }

    public Path directory() {
        return directory;
    }

    public Set<String> names() {
        return tensors.keySet();
    }

    /** The tensor, or null when the checkpoint has none of that name. */
    public Tensor find(String name) {
        return tensors.get(name);
    }

    @Override
    public void close() {
        arena.close();
    }
}
