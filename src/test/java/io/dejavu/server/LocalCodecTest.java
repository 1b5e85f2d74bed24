package io.dejavu.server;

import io.dejavu.generation.FinishReason;
import io.dejavu.generation.GenerationParams;
import io.dejavu.sampling.SamplingParams;
import io.dejavu.scheduler.Admission;
import io.dejavu.scheduler.GenerationEvent;
import io.dejavu.scheduler.GenerationRequest;
import io.vertx.core.Vertx;
import io.vertx.core.eventbus.EventBus;
import io.vertx.junit5.Checkpoint;
import io.vertx.junit5.VertxExtension;
import io.vertx.junit5.VertxTestContext;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

import java.util.List;

import static org.junit.jupiter.api.Assertions.assertSame;

/** What crosses the event bus between the verticles and the engine arrives as the sender's object: no JSON, no copy. */
@ExtendWith(VertxExtension.class)
class LocalCodecTest {
    @Test
    void requestsAndEventsArriveAsTheSentObjects(Vertx vertx, VertxTestContext test) {
        EventBus eventBus = vertx.eventBus();
        DejavuServer.registerCodecs(eventBus);
        List<Object> messages = List.of(
                new GenerationRequest("r", new int[]{2, 133}, GenerationParams.of(4, SamplingParams.greedy()), true),
                Admission.QUEUE_FULL,
                new GenerationEvent.Token("r", 0, 133, " the", Double.NaN, List.of(), new double[]{0.8, 0.7}, null,
                        5_000_000, 64, 9_000_000),
                new GenerationEvent.Finish("r", FinishReason.LENGTH, 2, 4, null, 9_000_000, 30_000_000));
        Checkpoint received = test.checkpoint(messages.size());
        for (int i = 0; i < messages.size(); i++) {
            Object sent = messages.get(i);
            String address = "codec-test." + i;
            eventBus.consumer(address, message -> test.verify(() -> {
                assertSame(sent, message.body());
                received.flag();
            })).completion().onSuccess(v -> eventBus.send(address, sent));
        }
    }
}
