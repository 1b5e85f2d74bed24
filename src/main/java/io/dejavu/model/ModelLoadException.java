package io.dejavu.model;

import java.nio.file.Path;

/** A model directory or checkpoint file that cannot be used; the message names the file and the problem. */
public class ModelLoadException extends RuntimeException {
    public ModelLoadException(String message) {
        super(message);
    }

    public ModelLoadException(Path file, String problem) {
        super(file + ": " + problem);
    }

    public ModelLoadException(Path file, String problem, Throwable cause) {
        super(file + ": " + problem, cause);
    }
}
