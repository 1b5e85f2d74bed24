package io.dejavu.api;

/**
 * What /health reports about the engine.
 *
 * @param state   loading, ready, draining, stopped or failed
 * @param message why it failed, else null
 */
public record EngineStatus(String state, String backend, String message, int running, int queued, int maxBatchSize) {
    public boolean ready() {
        return state.equals("ready");
    }
}
