package io.dejavu.server;

import io.dejavu.engine.EngineFactory;
import io.dejavu.api.ApiContext;
import io.dejavu.api.HttpApiVerticle;
import io.dejavu.config.ServiceConfig;
import io.dejavu.metrics.ServiceMetrics;
import io.dejavu.model.OptConfig;
import io.dejavu.scheduler.Admission;
import io.dejavu.scheduler.GenerationEvent;
import io.dejavu.scheduler.GenerationRequest;
import io.dejavu.tokenizer.Tokenizer;
import io.vertx.core.DeploymentOptions;
import io.vertx.core.Future;
import io.vertx.core.ThreadingModel;
import io.vertx.core.Vertx;
import io.vertx.core.eventbus.EventBus;

import java.util.concurrent.ExecutionException;

/**
 * The running service: the HTTP/WebSocket verticles (one per core unless configured) and the inference worker,
 * joined by the event bus.
 */
public final class DejavuServer implements AutoCloseable {
    private final Vertx vertx;
    private final InferenceVerticle inference;
    private String inferenceDeployment;
    private boolean closed;

    private DejavuServer(Vertx vertx, InferenceVerticle inference) {
        this.vertx = vertx;
        this.inference = inference;
    }

    /**
     * Starts with the engine the config's backend names.
     *
     * @param modelName the id the API lists and accepts for the model
     */
    public static DejavuServer start(ServiceConfig config, String modelName) {
        return start(config, modelName, EngineFactory::create);
    }

    /**
     * Starts the server and returns once it listens and the engine is ready.
     *
     * @param modelName the id the API lists and accepts for the model
     * @param engines   makes the engine for a backend name, a loaded model and the predictors (or null)
     * @throws IllegalStateException when it cannot start, with the reason
     */
    public static DejavuServer start(ServiceConfig config, String modelName, EngineFactory.Maker engines) {
        // The tokenizer and config are read first: a wrong model directory fails here, before anything listens.
        Tokenizer tokenizer = Tokenizer.load(config.model());
        OptConfig modelConfig = OptConfig.read(config.model());
        // Predictors the settings name must load: a wrong path fails here too.
        SparsitySetup sparsity = SparsitySetup.load(config, modelConfig);
        ServiceMetrics metrics = new ServiceMetrics();
        Vertx vertx = Vertx.vertx();
        registerCodecs(vertx.eventBus());
        InferenceVerticle inference = new InferenceVerticle(config, tokenizer, metrics, engines, sparsity);
        DejavuServer server = new DejavuServer(vertx, inference);
        ApiContext api = new ApiContext(config, tokenizer, modelConfig, modelName, metrics, inference::status,
                inference::sparseAvailable);
        int instances = config.httpInstances() > 0 ? config.httpInstances() : Runtime.getRuntime().availableProcessors();
        try {
            await(vertx.deployVerticle(() -> new HttpApiVerticle(api), new DeploymentOptions().setInstances(instances)));
            System.err.printf("dejavu: listening on http://%s:%d (%d HTTP verticle(s))%n", config.host(), config.port(),
                    instances);
            server.inferenceDeployment = await(vertx.deployVerticle(inference,
                    new DeploymentOptions().setThreadingModel(ThreadingModel.WORKER)));
        } catch (RuntimeException e) {
            vertx.close();
            throw e;
        }
        return server;
    }

    static void registerCodecs(EventBus eventBus) {
        eventBus.registerDefaultCodec(GenerationRequest.class, new LocalCodec<>(GenerationRequest.class));
        eventBus.registerDefaultCodec(Admission.class, new LocalCodec<>(Admission.class));
        eventBus.registerDefaultCodec(GenerationEvent.Token.class, new LocalCodec<>(GenerationEvent.Token.class));
        eventBus.registerDefaultCodec(GenerationEvent.Finish.class, new LocalCodec<>(GenerationEvent.Finish.class));
    }

    /**
     * Graceful shutdown: the engine stops admitting, in-flight generations finish (or are cancelled after the grace
     * period), then WebSockets are closed with "going away" and the HTTP servers stop.
     */
    @Override
    public synchronized void close() {
        if (closed) return;
        closed = true;
        System.err.println("dejavu: shutting down");
        try {
            if (inferenceDeployment != null) await(vertx.undeploy(inferenceDeployment));
        } finally {
            await(vertx.close());
        }
        System.err.println("dejavu: stopped");
    }

    private static <T> T await(Future<T> future) {
        try {
            return future.toCompletionStage().toCompletableFuture().get();
        } catch (ExecutionException e) {
            Throwable cause = e.getCause();
            throw cause instanceof RuntimeException r ? r : new IllegalStateException(cause.getMessage(), cause);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted", e);
        }
    }
}
