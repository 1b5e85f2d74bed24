package io.dejavu.server;

import io.dejavu.engine.Engine;
import io.dejavu.engine.EngineFactory;
import io.dejavu.engine.Sequence;
import io.dejavu.engine.Step;
import io.dejavu.engine.StepSparsity;
import io.dejavu.model.OptConfig;

import java.util.List;

/** A real engine that runs a test's hook before each forward pass, to make it fail or slow down on demand. */
record HookedEngine(Engine engine, Runnable beforeForward) implements Engine {
    /** The backend's engine, each step made at least this much longer: a long generation outlasts a test's steps. */
    static EngineFactory.Maker slowed(long millisPerStep) {
        return (backend, model, predictors) -> new HookedEngine(EngineFactory.create(backend, model, predictors), () -> {
            try {
                Thread.sleep(millisPerStep);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        });
    }

    @Override
    public OptConfig config() {
        return engine.config();
    }

    @Override
    public String backend() {
        return engine.backend();
    }

    @Override
    public Sequence newSequence() {
        return engine.newSequence();
    }

    @Override
    public List<float[][]> forward(List<Step> steps) {
        beforeForward.run();
        return engine.forward(steps);
    }

    @Override
    public boolean sparseAvailable() {
        return engine.sparseAvailable();
    }

    @Override
    public StepSparsity lastStepSparsity() {
        return engine.lastStepSparsity();
    }

    @Override
    public void close() {
        engine.close();
    }
}
