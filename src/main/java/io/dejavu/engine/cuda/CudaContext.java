package io.dejavu.engine.cuda;

import jcuda.CudaException;
import jcuda.Pointer;
import jcuda.driver.CUcontext;
import jcuda.driver.CUdevice;
import jcuda.driver.CUdeviceptr;
import jcuda.driver.CUevent;
import jcuda.driver.CUfunction;
import jcuda.driver.CUfunction_attribute;
import jcuda.driver.CUmodule;
import jcuda.driver.CUresult;
import jcuda.driver.CUstream;
import jcuda.driver.JCudaDriver;

import java.io.IOException;
import java.io.InputStream;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import static jcuda.driver.JCudaDriver.*;

/**
 * A CUDA context on one device with the kernels loaded (decoder.cu), a main stream and a side stream.
 * Launches go to the main stream, or to the side stream inside {@link #onSideStream}: the sparse step computes the
 * predictions for the next layer there while the main stream runs the current one. Every CUDA call's result is
 * checked (JCuda throws on any error). The context is current on one thread at a time: the engine makes it current
 * at each entry ({@link #makeCurrent()}), so callers must not use one engine from two threads at once.
 */
final class CudaContext implements AutoCloseable {
    static final String KERNELS = "/cuda/decoder.fatbin";

    private final CUcontext context = new CUcontext();
    private final CUmodule module = new CUmodule();
    private final CUstream stream = new CUstream(), sideStream = new CUstream();
    private CUstream current = stream;
    private final Map<String, CUfunction> functions = new HashMap<>();
    private final List<DeviceMemory> allocations = new ArrayList<>();
    private final String deviceName;
    private final long totalMemory;

    CudaContext(int deviceIndex) {
        byte[] fatbin = kernels();
        try {
            JCudaDriver.setExceptionsEnabled(true);
            cuInit(0);
            int[] count = {0};
            cuDeviceGetCount(count);
            if (deviceIndex >= count[0]) {
                throw new CudaUnavailableException("CUDA device " + deviceIndex + " asked for, but the driver sees "
                        + count[0] + " device(s)");
            }
            CUdevice device = new CUdevice();
            cuDeviceGet(device, deviceIndex);
            byte[] name = new byte[256];
            cuDeviceGetName(name, name.length, device);
            deviceName = new String(name).trim().replace("\0", "");
            long[] total = {0};
            cuDeviceTotalMem(total, device);
            totalMemory = total[0];
            cuCtxCreate(context, 0, device);
        } catch (UnsatisfiedLinkError | CudaException e) {
            throw new CudaUnavailableException("CUDA driver not usable: "
                    + String.valueOf(e.getMessage()).lines().findFirst().orElse(""));
        }
        cuModuleLoadData(module, fatbin);
        cuStreamCreate(stream, 0);
        cuStreamCreate(sideStream, 0);
        streamHandle = DependentLaunch.handle(stream);
        int[] major = {0};
        cuDeviceGetAttribute(major, jcuda.driver.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                deviceOf());
        computeMajor = major[0];
    }

    private final long streamHandle;
    private final int computeMajor;
    private boolean dependentLaunch;

    private CUdevice deviceOf() {
        CUdevice d = new CUdevice();
        cuCtxGetDevice(d);
        return d;
    }

    /** Whether the GPU (compute capability 9.0+) and the driver support programmatic dependent launch. */
    boolean canLaunchDependent() {
        return computeMajor >= 9 && DependentLaunch.available();
    }

    /** Launches kernels with programmatic dependent launch from now on, where {@link #canLaunchDependent} says so. */
    void useDependentLaunch(boolean wanted) {
        dependentLaunch = wanted && canLaunchDependent();
    }

    /** Why CUDA cannot be used here, or null when it can (loads the driver but creates no context). */
    static String unavailableReason() {
        if (CudaContext.class.getResource(KERNELS) == null) {
            return "this build has no CUDA kernels (nvcc was not found when it was built)";
        }
        try {
            JCudaDriver.setExceptionsEnabled(true);
            cuInit(0);
            int[] count = {0};
            cuDeviceGetCount(count);
            return count[0] == 0 ? "no CUDA device found" : null;
        } catch (UnsatisfiedLinkError | CudaException | NoClassDefFoundError e) {
            String message = String.valueOf(e.getMessage()).lines().findFirst().orElse("");
            return "no usable CUDA driver (" + message + ")";
        }
    }

    private static byte[] kernels() {
        try (InputStream in = CudaContext.class.getResourceAsStream(KERNELS)) {
            if (in == null) {
                throw new CudaUnavailableException("this build has no CUDA kernels (" + KERNELS
                        + " missing: nvcc was not found when it was built)");
            }
            byte[] bytes = in.readAllBytes();
            byte[] terminated = new byte[bytes.length + 1];  // JCuda reads the image as a C string
            System.arraycopy(bytes, 0, terminated, 0, bytes.length);
            return terminated;
        } catch (IOException e) {
            throw new CudaUnavailableException("cannot read " + KERNELS + ": " + e.getMessage());
        }
    }

    String deviceName() {
        return deviceName;
    }

    long freeMemory() {
        long[] free = {0}, total = {0};
        cuMemGetInfo(free, total);
        return free[0];
    }

    void makeCurrent() {
        cuCtxSetCurrent(context);
    }

    CUstream stream() {
        return stream;
    }

    CUfunction function(String name) {
        return functions.computeIfAbsent(name, n -> {
            CUfunction f = new CUfunction();
            cuModuleGetFunction(f, module, n);
            return f;
        });
    }

    /**
     * Issues {@code work}'s launches on the side stream, ordered after everything issued on the main stream so far;
     * the returned event completes with them ({@link #waitFor}). Works eagerly and inside a graph capture (the side
     * stream joins the capture through the event).
     */
    void onSideStream(CUevent fork, CUevent done, Runnable work) {
        cuEventRecord(fork, stream);
        cuStreamWaitEvent(sideStream, fork, 0);
        current = sideStream;
        try {
            work.run();
        } finally {
            current = stream;
        }
        cuEventRecord(done, sideStream);
    }

    /** Records {@code e} on the stream launches go to now (inside {@link #onSideStream}'s work: the side stream). */
    void record(CUevent e) {
        cuEventRecord(e, current);
    }

    /** Orders the main stream's next launches after an event of {@link #onSideStream}. */
    void waitFor(CUevent done) {
        cuStreamWaitEvent(stream, done, 0);
    }

    /** An event for ordering only (no timing). */
    CUevent newEvent() {
        CUevent e = new CUevent();
        cuEventCreate(e, jcuda.driver.CUevent_flags.CU_EVENT_DISABLE_TIMING);
        events.add(e);
        return e;
    }

    private final List<CUevent> events = new ArrayList<>();

    private final Map<String, Integer> resident = new HashMap<>();
    private Boolean wgmma;

    /**
     * Whether the kernels the driver loaded carry gemm_f16_wgmma's code: only their sm_90a build does (gemm.cuh),
     * and which build runs is the driver's choice, so the module is asked.
     */
    boolean hasWgmma() {
        if (wgmma == null) {
            DeviceMemory flag = alloc(4, "wgmma probe");
            try {
                launch("gemm_wgmma_available", 1, 1, 1, 1, 0, flag.at(0));
                synchronize();
                int[] answer = {0};
                cuMemcpyDtoH(Pointer.to(answer), flag.ptr(0), 4);
                wgmma = answer[0] == 1;
            } finally {
                free(flag);
            }
        }
        return wgmma;
    }

    int multiprocessors() {
        int[] sms = {0};
        cuDeviceGetAttribute(sms, jcuda.driver.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, deviceOf());
        return sms[0];
    }

    /** How many blocks of a kernel run at once on the whole GPU (occupancy per multiprocessor x multiprocessors). */
    int residentBlocks(String kernel, int blockThreads, int sharedBytes) {
        return resident.computeIfAbsent(kernel + "/" + blockThreads + "/" + sharedBytes, key -> {
            int[] perSm = {0}, sms = {0};
            cuOccupancyMaxActiveBlocksPerMultiprocessor(perSm, function(kernel), blockThreads, sharedBytes);
            cuDeviceGetAttribute(sms, jcuda.driver.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
                    deviceOf());
            return Math.max(1, perSm[0] * sms[0]);
        });
    }

    void allowSharedMemory(String kernel, int bytes) {
        cuFuncSetAttribute(function(kernel), CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes);
    }

    DeviceMemory alloc(long bytes, String what) {
        CUdeviceptr p = new CUdeviceptr();
        try {
            cuMemAlloc(p, Math.max(bytes, 16));
        } catch (CudaException e) {
            if (e.getMessage() != null && e.getMessage().contains(CUresult.stringFor(CUresult.CUDA_ERROR_OUT_OF_MEMORY))) {
                throw new GpuOutOfMemoryException(String.format(
                        "GPU out of memory allocating %s (%.1f MiB): %.1f of %.1f MiB free on %s",
                        what, bytes / 1048576.0, freeMemory() / 1048576.0, totalMemory / 1048576.0, deviceName));
            }
            throw e;
        }
        DeviceMemory m = new DeviceMemory(p, DeviceMemory.addressOf(p), bytes, what);
        allocations.add(m);
        return m;
    }

    void free(DeviceMemory m) {
        if (allocations.remove(m)) cuMemFree(m.base());
    }

    void upload(DeviceMemory dst, long offset, Pointer src, long bytes) {
        cuMemcpyHtoDAsync(dst.ptr(offset), src, bytes, stream);
    }

    void download(Pointer dst, DeviceMemory src, long offset, long bytes) {
        cuMemcpyDtoHAsync(dst, src.ptr(offset), bytes, stream);
    }

    void copy(DeviceMemory dst, long dstOffset, DeviceMemory src, long srcOffset, long bytes) {
        cuMemcpyDtoDAsync(dst.ptr(dstOffset), src.ptr(srcOffset), bytes, stream);
    }

    void synchronize() {
        cuStreamSynchronize(sideStream);
        cuStreamSynchronize(stream);
    }

    /**
     * Launches a kernel on the stream. Arguments: Long = a device address (0 = null), Integer, Float, byte[] = a
     * struct passed by value ({@link Epilogue}).
     */
    void launch(String kernel, int gridX, int gridY, int gridZ, int block, int sharedBytes, Object... args) {
        launchAs(kernel, kernel, gridX, gridY, gridZ, block, sharedBytes, args);
    }

    /** As {@link #launch}, counted under {@code label} when profiling. */
    void launchAs(String label, String kernel, int gridX, int gridY, int gridZ, int block, int sharedBytes,
                  Object... args) {
        Pointer[] params = new Pointer[args.length];
        for (int i = 0; i < args.length; i++) {
            params[i] = switch (args[i]) {
                case Long v -> Pointer.to(new long[]{v});
                case Integer v -> Pointer.to(new int[]{v});
                case Float v -> Pointer.to(new float[]{v});
                case byte[] v -> Pointer.to(v);
                default -> throw new IllegalArgumentException("kernel argument " + i + " of " + kernel + ": "
                        + args[i]);
            };
        }
        CUevent start = null;
        if (profile != null) {
            start = new CUevent();
            cuEventCreate(start, 0);
            cuEventRecord(start, current);
        }
        if (dependentLaunch && current == stream) {
            DependentLaunch.launch(DependentLaunch.handle(function(kernel)), streamHandle, gridX, gridY, gridZ, block,
                    sharedBytes, args);
        } else {
            cuLaunchKernel(function(kernel), gridX, gridY, gridZ, block, 1, 1, sharedBytes, current, Pointer.to(params),
                    null);
        }
        if (profile != null) {
            CUevent stop = new CUevent();
            cuEventCreate(stop, 0);
            cuEventRecord(stop, current);
            profile.add(new Timed(label, start, stop));
        }
    }

    private record Timed(String label, CUevent start, CUevent stop) {
    }

    private List<Timed> profile;

    /** From now on, time every launch (eagerly: graphs are not used while profiling). */
    void startProfile() {
        profile = new ArrayList<>();
    }

    boolean profiling() {
        return profile != null;
    }

    /** Stops profiling; per label: launches, total and mean microseconds, sorted by total. */
    String stopProfile() {
        synchronize();
        Map<String, double[]> byLabel = new HashMap<>();
        double total = 0;
        int launches = profile.size();
        for (Timed t : profile) {
            float[] ms = {0};
            cuEventElapsedTime(ms, t.start(), t.stop());
            double[] agg = byLabel.computeIfAbsent(t.label(), k -> new double[2]);
            agg[0]++;
            agg[1] += ms[0] * 1000;
            total += ms[0] * 1000;
            cuEventDestroy(t.start());
            cuEventDestroy(t.stop());
        }
        profile = null;
        StringBuilder sb = new StringBuilder(String.format("%-34s %8s %10s %9s%n", "kernel", "launches", "total us", "mean us"));
        double all = total;
        byLabel.entrySet().stream().sorted((a, b) -> Double.compare(b.getValue()[1], a.getValue()[1]))
                .forEach(e -> sb.append(String.format("%-34s %8d %10.1f %9.2f%n", e.getKey(), (int) e.getValue()[0],
                        e.getValue()[1], e.getValue()[1] / e.getValue()[0])));
        sb.append(String.format("%-34s %8d %10.1f%n", "all (kernel time, no launch gaps)", launches, all));
        return sb.toString();
    }

    @Override
    public void close() {
        makeCurrent();
        for (DeviceMemory m : List.copyOf(allocations)) free(m);
        for (CUevent e : events) cuEventDestroy(e);
        cuStreamDestroy(sideStream);
        cuStreamDestroy(stream);
        cuModuleUnload(module);
        cuCtxDestroy(context);
    }
}
