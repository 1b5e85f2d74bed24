package io.dejavu.engine.cuda;

/** CUDA was asked for but cannot run here: no driver, no GPU, or a jar built without kernels. */
public final class CudaUnavailableException extends RuntimeException {
    public CudaUnavailableException(String message) {
        super(message);
    }
}
