package io.dejavu.cli;

import io.dejavu.hub.ModelLocator;
import picocli.CommandLine.Option;

import java.nio.file.Path;

/** The --model option of every command that loads a model: a directory or a Hugging Face hub id. */
public final class ModelOption {
    @Option(names = "--model", paramLabel = "DIR|HUB_ID",
            description = "Model directory, or a Hugging Face hub id such as facebook/opt-1.3b (default: the shipped models/opt-demo).")
    String model;

    /** The model directory, downloading a hub id into the Hugging Face cache first when it is not there. */
    public Path directory() {
        return ModelLocator.fromEnvironment().locate(model != null ? model : defaultModel().toString());
    }

    /** models/opt-demo of the installation that bin/dejavu runs, else of the working directory. */
    static Path defaultModel() {
        String home = System.getProperty("dejavu.home");
        return (home != null ? Path.of(home) : Path.of("")).resolve("models/opt-demo");
    }
}
