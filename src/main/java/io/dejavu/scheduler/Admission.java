package io.dejavu.scheduler;

/** The scheduler's answer to a submitted request. */
public enum Admission {
    /** Queued; its events will follow. */
    ACCEPTED,
    /** The waiting queue is at its limit: try again later. */
    QUEUE_FULL,
    /** The server is shutting down and takes no new work. */
    SHUTTING_DOWN
}
