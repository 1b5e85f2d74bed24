package io.dejavu.engine;

/**
 * One token sequence's state inside an engine: its KV cache. Tokens are appended by {@link Engine#forward};
 * {@link #close()} frees the cache.
 */
public interface Sequence extends AutoCloseable {
    /** Tokens in the KV cache so far. */
    int length();

    @Override
    void close();
}
