package io.dejavu.server;

import io.dejavu.scheduler.GenerationEvent;

import java.util.concurrent.LinkedBlockingQueue;
import java.util.function.Consumer;

/**
 * Hands the engine thread's events to the event bus from a thread of its own, in the order they come. A send from
 * outside Vert.x costs a few microseconds (a message, a handler lookup, a task queued on the receiving event loop
 * and its wake-up); 64 of them after every decode step of a full batch were about a quarter of a millisecond that
 * every stream's next token waited for, since the engine thread starts the next step only when it has handed out
 * the last one. Queueing an event is a fraction of a microsecond.
 */
final class EventRelay implements Consumer<GenerationEvent>, AutoCloseable {
    private final LinkedBlockingQueue<GenerationEvent> queue = new LinkedBlockingQueue<>();
    private final Thread thread;

    EventRelay(Consumer<GenerationEvent> send) {
        thread = Thread.ofPlatform().daemon().name("dejavu-event-relay").start(() -> relay(send));
    }

    @Override
    public void accept(GenerationEvent event) {
        queue.add(event);
    }

    private void relay(Consumer<GenerationEvent> send) {
        while (true) {
            try {
                deliver(send, queue.take());
            } catch (InterruptedException closing) {
                for (GenerationEvent event; (event = queue.poll()) != null; ) deliver(send, event);
                return;
            }
        }
    }

    private static void deliver(Consumer<GenerationEvent> send, GenerationEvent event) {
        try {
            send.accept(event);
        } catch (RuntimeException e) {
            System.err.println("dejavu: could not deliver an event of " + event.requestId() + ": " + e.getMessage());
        }
    }

    /** Sends what is queued, then stops: call it once nothing adds events any more. */
    @Override
    public void close() throws InterruptedException {
        thread.interrupt();
        thread.join();
    }
}
