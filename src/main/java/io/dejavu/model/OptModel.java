package io.dejavu.model;

import java.nio.file.Files;
import java.nio.file.Path;

/** A loaded OPT model directory: its config and its weights, mapped from the checkpoint files. */
public final class OptModel implements AutoCloseable {
    private final Path directory;
    private final OptConfig config;
    private final Checkpoint checkpoint;
    private final OptWeights weights;

    private OptModel(Path directory, OptConfig config, Checkpoint checkpoint, OptWeights weights) {
        this.directory = directory;
        this.config = config;
        this.checkpoint = checkpoint;
        this.weights = weights;
    }

    public static OptModel load(Path directory) {
        if (!Files.isDirectory(directory)) throw new ModelLoadException(directory, "not a directory");
        OptConfig config = OptConfig.read(directory);
        Checkpoint checkpoint = Checkpoint.open(directory);
        try {
            return new OptModel(directory, config, checkpoint, OptWeights.of(config, checkpoint));
        } catch (RuntimeException e) {
            checkpoint.close();
            throw e;
        }
    }

    public Path directory() {
        return directory;
    }

    public OptConfig config() {
        return config;
    }

    public OptWeights weights() {
        return weights;
    }

    @Override
    public void close() {
        checkpoint.close();
    }
}
