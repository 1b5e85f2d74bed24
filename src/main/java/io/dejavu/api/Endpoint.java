package io.dejavu.api;

/** Where a generation request came from; decides which parameters it may carry and how its answer is shaped. */
enum Endpoint {
    COMPLETIONS("completions"),
    CHAT("chat_completions"),
    WEBSOCKET("websocket");

    /** The label metrics count requests under. */
    final String label;

    Endpoint(String label) {
        this.label = label;
    }
}
