package io.dejavu.cli;

import io.dejavu.engine.cuda.CudaEngine;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/** `dejavu bench`'s refusals: options of the other backend, bad values, CUDA asked for where there is none. */
class BenchCommandTest {
    @Test
    void cudaOptionsOnTheCpuBackendAreRefused() {
        CliRun run = CliRun.run("bench", "--sparse");
        assertEquals(2, run.exitCode());
        assertTrue(run.err().contains("--shape and --sparse are for --backend cuda"), run.err());
    }

    @Test
    void unknownBackendIsNamed() {
        CliRun run = CliRun.run("bench", "--backend", "tpu");
        assertEquals(2, run.exitCode());
        assertTrue(run.err().contains("unknown --backend 'tpu' (cpu or cuda)"), run.err());
    }

    @Test
    void badBatchIsRefused() {
        CliRun run = CliRun.run("bench", "--batch", "1,0");
        assertEquals(2, run.exitCode());
        assertTrue(run.err().contains("--batch sizes must be at least 1"), run.err());
    }

    @Test
    void cudaWithoutAGpuSaysWhyWithoutAStackTrace() {
        assumeTrue(CudaEngine.unavailableReason() != null, "a CUDA device is present");
        CliRun run = CliRun.run("bench", "--backend", "cuda", "--shape", "opt-1.3b");
        assertEquals(2, run.exitCode());
        assertTrue(run.err().contains("the cuda backend is not available: "), run.err());
        assertFalse(run.err().contains("\tat "), run.err());
    }
}
