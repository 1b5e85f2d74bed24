package io.dejavu.engine.cpu;

import io.dejavu.engine.Engine;
import io.dejavu.engine.EngineFactory;
import io.dejavu.model.OptModel;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;

/** The cpu_threads setting reaches the CPU engine: a count as given, 0 for one thread per core. */
class CpuThreadsTest {
    @Test
    void theCpuEngineRunsTheThreadsItIsGiven() {
        try (OptModel model = OptModel.load(GoldenReference.shared().resolve("golden/opt-tiny-preln"))) {
            try (Engine three = EngineFactory.create("cpu", 3, 0, model, null)) {
                assertEquals(3, assertInstanceOf(CpuEngine.class, three).threads());
            }
            try (Engine perCore = EngineFactory.create("cpu", 0, 0, model, null)) {
                assertEquals(Runtime.getRuntime().availableProcessors(),
                        assertInstanceOf(CpuEngine.class, perCore).threads());
            }
        }
    }
}
