package io.dejavu.engine.cuda;

/** A device allocation or the KV cache pool did not fit; the message names what and how much. */
public final class GpuOutOfMemoryException extends RuntimeException {
    public GpuOutOfMemoryException(String message) {
        super(message);
    }
}
