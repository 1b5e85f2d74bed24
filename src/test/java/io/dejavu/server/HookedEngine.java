package io.dejavu.server;

import io.dejavu.engine.Engine;
import io.dejavu.engine.EngineFactory;
import io.dejavu.engine.ForwardingEngine;
import io.dejavu.engine.Step;

import java.util.List;

/** A real engine that runs a test's hook before each forward pass, to make it fail or slow down on demand. */
final class HookedEngine extends ForwardingEngine {
    private final Runnable beforeForward;

    HookedEngine(Engine engine, Runnable beforeForward) {
        super(engine);
        this.beforeForward = beforeForward;
    }

    /** The backend's engine, each step made at least this much longer: a long generation outlasts a test's steps. */
    static EngineFactory.Maker slowed(long millisPerStep) {
        return (backend, cpuThreads, kvCacheMib, model, predictors) ->
                new HookedEngine(EngineFactory.create(backend, cpuThreads, kvCacheMib, model, predictors), () -> {
                    try {
                        Thread.sleep(millisPerStep);
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                });
    }

    @Override
    public List<float[][]> forward(List<Step> steps) {
        beforeForward.run();
        return engine.forward(steps);
    }
}
