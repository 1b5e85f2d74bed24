package io.dejavu.config;

/** A setting that cannot be used; the message names the key, where its value came from and the problem. */
public final class ConfigException extends RuntimeException {
    public ConfigException(String message) {
        super(message);
    }
}
