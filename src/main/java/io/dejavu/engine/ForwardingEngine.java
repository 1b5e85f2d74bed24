package io.dejavu.engine;

import io.dejavu.model.OptConfig;

import java.util.List;

/**
 * An engine that passes every call to another, for wrappers that change one or two of them (a probe on each pass, a
 * test's hook). {@link #nextTokens} is not passed on: it runs through {@link #forward}, so that an override of
 * forward sees every pass.
 */
public abstract class ForwardingEngine implements Engine {
    protected final Engine engine;

    protected ForwardingEngine(Engine engine) {
        this.engine = engine;
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
        return engine.forward(steps);
    }

    @Override
    public int kvCacheBlockTokens() {
        return engine.kvCacheBlockTokens();
    }

    @Override
    public int kvCacheBlocks() {
        return engine.kvCacheBlocks();
    }

    @Override
    public int freeKvCacheBlocks() {
        return engine.freeKvCacheBlocks();
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
