package io.dejavu.engine.cuda;

import jcuda.CudaException;
import jcuda.NativePointerObject;
import jcuda.driver.CUresult;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.invoke.MethodHandle;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * Kernel launches with programmatic dependent launch (the driver's cuLaunchKernelEx with
 * CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION), so that a kernel's blocks start, and issue their weight
 * loads, while the previous kernel drains; decoder.cu's kernels wait for their predecessor before reading
 * activations. JCuda 12.6 has no binding for cuLaunchKernelEx, so it is called through the Java FFM API on the
 * driver library JCuda already loaded. Also recorded inside CUDA graphs. Unavailable (null) where the driver lacks it.
 */
final class DependentLaunch {
    private static final int ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION = 6;
    private static final MethodHandle LAUNCH = find();

    private DependentLaunch() {
    }

    @SuppressWarnings("restricted")  // native access is enabled for the whole application (jar manifest, JVM flag)
    private static MethodHandle find() {
        try {
            SymbolLookup driver = SymbolLookup.libraryLookup("libcuda.so.1", Arena.global());
            return driver.find("cuLaunchKernelEx").map(f -> Linker.nativeLinker().downcallHandle(f,
                    FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS, ADDRESS))).orElse(null);
        } catch (RuntimeException | LinkageError e) {
            return null;
        }
    }

    static boolean available() {
        return LAUNCH != null;
    }

    /** A JCuda handle's native value (JCuda keeps it protected; a subclass may read its own copy). */
    static long handle(NativePointerObject o) {
        return new Handle(o).value();
    }

    private static final class Handle extends NativePointerObject {
        Handle(NativePointerObject o) {
            super(o);
        }

        long value() {
            return getNativePointer();
        }
    }

    /** Arguments as in {@link CudaContext#launch}. */
    static void launch(long function, long stream, int gridX, int gridY, int gridZ, int block, int sharedBytes,
                       Object... args) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment params = arena.allocate(ADDRESS, Math.max(1, args.length));
            for (int i = 0; i < args.length; i++) {
                MemorySegment v = switch (args[i]) {
                    case Long x -> arena.allocateFrom(JAVA_LONG, x);
                    case Integer x -> arena.allocateFrom(JAVA_INT, x);
                    case Float x -> arena.allocateFrom(JAVA_FLOAT, x);
                    case byte[] x -> arena.allocate(x.length, 8).copyFrom(MemorySegment.ofArray(x));
                    default -> throw new IllegalArgumentException("kernel argument " + i + ": " + args[i]);
                };
                params.setAtIndex(ADDRESS, i, v);
            }
            MemorySegment attribute = arena.allocate(72, 8);  // CUlaunchAttribute: id, pad, 64-byte value union
            attribute.set(JAVA_INT, 0, ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION);
            attribute.set(JAVA_INT, 8, 1);
            MemorySegment config = arena.allocate(56, 8);  // CUlaunchConfig
            int[] dims = {gridX, gridY, gridZ, block, 1, 1, sharedBytes};
            for (int i = 0; i < dims.length; i++) config.set(JAVA_INT, 4L * i, dims[i]);
            config.set(JAVA_LONG, 32, stream);
            config.set(ADDRESS, 40, attribute);
            config.set(JAVA_INT, 48, 1);
            int result = (int) LAUNCH.invokeExact(config, MemorySegment.ofAddress(function), params, MemorySegment.NULL);
            if (result != CUresult.CUDA_SUCCESS) throw new CudaException(CUresult.stringFor(result));
        } catch (RuntimeException | Error e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

}
