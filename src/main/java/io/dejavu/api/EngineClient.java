package io.dejavu.api;

import io.dejavu.generation.GenerationParams;
import io.dejavu.scheduler.Admission;
import io.dejavu.scheduler.GenerationEvent;
import io.dejavu.scheduler.GenerationRequest;
import io.vertx.core.Future;
import io.vertx.core.Handler;
import io.vertx.core.Vertx;
import io.vertx.core.eventbus.EventBus;
import io.vertx.core.eventbus.MessageConsumer;
import io.vertx.core.eventbus.ReplyException;
import io.vertx.core.eventbus.ReplyFailure;

import java.util.concurrent.atomic.AtomicLong;

/**
 * The API side of the event bus to the inference worker: submits a request, receives its events on a
 * per-request address, cancels it. Events travel as objects (a local codec), not as JSON.
 */
public final class EngineClient {
    /** Takes a {@link GenerationRequest}; replies with an {@link Admission}, or fails with 400 for a bad request. */
    public static final String GENERATE_ADDRESS = "dejavu.generate";
    /** Takes a request id to cancel. */
    public static final String CANCEL_ADDRESS = "dejavu.cancel";
    private static final String EVENTS_ADDRESS = "dejavu.events.";
    private static final AtomicLong IDS = new AtomicLong();

    private final EventBus eventBus;

    EngineClient(Vertx vertx) {
        this.eventBus = vertx.eventBus();
    }

    /** Where the events of a request are sent. */
    public static String eventsAddress(String requestId) {
        return EVENTS_ADDRESS + requestId;
    }

    /** A new id, unique in this server. */
    static String newRequestId() {
        return "gen-" + IDS.incrementAndGet();
    }

    /** A submitted request. */
    record Submitted(String id, EventBus eventBus) {
        void cancel() {
            eventBus.send(CANCEL_ADDRESS, id);
        }
    }

    /**
     * Submits a generation; its events go to the handler on the caller's context until (and including) the
     * {@link GenerationEvent.Finish}. Fails with an {@link ApiException} when the request is refused.
     */
    Future<Submitted> submit(String id, int[] promptIds, GenerationParams params, boolean sparse,
                             Handler<GenerationEvent> events) {
        MessageConsumer<GenerationEvent> consumer = eventBus.localConsumer(eventsAddress(id));
        consumer.handler(message -> {
            GenerationEvent event = message.body();
            if (event instanceof GenerationEvent.Finish) consumer.unregister();
            events.handle(event);
        });
        return consumer.completion()
                .compose(registered -> eventBus.<Admission>request(GENERATE_ADDRESS,
                        new GenerationRequest(id, promptIds, params, sparse)))
                .transform(reply -> {
                    Admission admission = reply.succeeded() ? reply.result().body() : null;
                    if (admission == Admission.ACCEPTED) return Future.succeededFuture(new Submitted(id, eventBus));
                    consumer.unregister();
                    return Future.failedFuture(refusal(admission, reply.cause()));
                });
    }

    private static ApiException refusal(Admission admission, Throwable failure) {
        if (admission == Admission.QUEUE_FULL) {
            return new ApiException(429, "rate_limit_error", null, "queue_full",
                    "the server is at its queue limit; retry shortly");
        }
        if (admission == Admission.SHUTTING_DOWN) {
            return new ApiException(503, "service_unavailable", null, "shutting_down", "the server is shutting down");
        }
        if (failure instanceof ReplyException reply && reply.failureType() == ReplyFailure.RECIPIENT_FAILURE
                && reply.failureCode() == 400) {
            return new ApiException(400, "invalid_request_error", null, "invalid_value", reply.getMessage());
        }
        if (failure instanceof ReplyException reply && reply.failureType() == ReplyFailure.NO_HANDLERS) {
            return new ApiException(503, "service_unavailable", null, "engine_not_ready",
                    "the engine is not ready yet (loading the model); retry shortly");
        }
        return new ApiException(500, "server_error", null, "engine_unreachable",
                "the engine did not answer: " + (failure == null ? "no reply" : failure.getMessage()));
    }
}
