package io.dejavu.generation;

/** Why a generation ended, with the name the OpenAI API uses on the wire. */
public enum FinishReason {
    /** The model produced its end-of-sequence token or a stop sequence. */
    STOP("stop"),
    /** max_tokens or the model's context length was reached. */
    LENGTH("length"),
    /** The client went away or cancelled. */
    CANCELLED("cancelled"),
    /** The engine failed. */
    ERROR("error");

    private final String wireName;

    FinishReason(String wireName) {
        this.wireName = wireName;
    }

    public String wireName() {
        return wireName;
    }

    @Override
    public String toString() {
        return wireName;
    }
}
