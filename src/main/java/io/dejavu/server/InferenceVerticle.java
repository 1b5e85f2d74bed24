package io.dejavu.server;

import io.dejavu.api.EngineClient;
import io.dejavu.api.EngineStatus;
import io.dejavu.config.ServiceConfig;
import io.dejavu.engine.Engine;
import io.dejavu.engine.EngineFactory;
import io.dejavu.metrics.ServiceMetrics;
import io.dejavu.model.OptModel;
import io.dejavu.scheduler.BatchScheduler;
import io.dejavu.scheduler.GenerationEvent;
import io.dejavu.scheduler.GenerationRequest;
import io.dejavu.tokenizer.Tokenizer;
import io.vertx.core.Future;
import io.vertx.core.VerticleBase;
import io.vertx.core.eventbus.EventBus;

import java.util.Locale;
import java.util.concurrent.TimeUnit;

/**
 * The inference worker: loads the model, owns the engine and runs the continuous batcher on the engine's own
 * thread. Deployed as a worker verticle because loading blocks; requests and cancellations arrive over the event
 * bus, and each request's events go back to its own address as objects (see {@link LocalCodec}).
 */
final class InferenceVerticle extends VerticleBase {
    private final ServiceConfig config;
    private final Tokenizer tokenizer;
    private final ServiceMetrics metrics;
    private final EngineFactory.Maker engines;
    private final SparsitySetup sparsity;
    private volatile BatchScheduler scheduler;
    private EventRelay relay;
    /** Sparse requests can run: the engine took the predictors. */
    private volatile boolean sparseAvailable;
    private volatile String failure;
    private OptModel model;

    InferenceVerticle(ServiceConfig config, Tokenizer tokenizer, ServiceMetrics metrics,
                      EngineFactory.Maker engines, SparsitySetup sparsity) {
        this.config = config;
        this.sparsity = sparsity;
        this.tokenizer = tokenizer;
        this.metrics = metrics;
        this.engines = engines;
    }

    @Override
    public Future<?> start() {
        long begin = System.nanoTime();
        System.err.printf("dejavu: loading %s (backend %s) ...%n", config.model(), config.backend());
        Engine engine = null;
        try {
            model = OptModel.load(config.model());
            engine = engines.create(config.backend(), config.cpuThreads(), config.kvCacheMib(), model,
                    sparsity.predictors());
            reportSparsity(engine);
            checkKvCache(engine);
            prepareDecode(engine);
        } catch (RuntimeException e) {
            failure = e.getMessage();
            if (engine != null) engine.close();
            if (model != null) model.close();
            return Future.failedFuture(e);
        }
        EventBus eventBus = vertx.eventBus();
        relay = new EventRelay(event -> eventBus.send(EngineClient.eventsAddress(event.requestId()), event));
        BatchScheduler batcher = new BatchScheduler(engine, tokenizer, config.maxBatchSize(), config.queueLimit(),
                config.prefillChunkTokens(), config.maxNumBatchedTokens(), relay, metrics);
        eventBus.<GenerationRequest>consumer(EngineClient.GENERATE_ADDRESS, message -> {
            try {
                message.reply(batcher.submit(message.body()));
            } catch (IllegalArgumentException e) {
                message.fail(400, e.getMessage());
            }
        });
        eventBus.<String>consumer(EngineClient.CANCEL_ADDRESS, message -> batcher.cancel(message.body()));
        batcher.start();
        scheduler = batcher;
        System.err.printf(Locale.ROOT, "dejavu: engine %s ready in %.1f s (max batch %d, queue limit %d)%n",
                engine.backend(), (System.nanoTime() - begin) / 1e9, config.maxBatchSize(), config.queueLimit());
        return Future.succeededFuture();
    }

    /**
     * A KV cache of fixed size must hold at least one generation of the longest the limits allow, or such a request
     * could only fail; the server does not start with one that cannot. Others may wait, or be preempted, for room.
     */
    private void checkKvCache(Engine engine) {
        int blockTokens = engine.kvCacheBlockTokens();
        if (blockTokens == 0) return;
        long positions = (long) engine.kvCacheBlocks() * blockTokens;
        long longest = Math.min(model.config().maxPositionEmbeddings(),
                (long) config.maxPromptTokens() + config.maxOutputTokens());
        System.err.printf(Locale.ROOT, "dejavu: KV cache of %d positions (%d blocks of %d), %.1f generations of the "
                + "longest the limits allow (%d positions)%n", positions, engine.kvCacheBlocks(), blockTokens,
                (double) positions / longest, longest);
        if (positions < longest) {
            throw new IllegalStateException("the KV cache holds " + positions + " positions, fewer than one "
                    + "generation may take (max_prompt_tokens + max_output_tokens, at most the model's context: "
                    + longest + "): raise kv_cache_mib or lower those limits");
        }
    }

    /** Readies the engine's decode steps up to the batch limit, so that no request waits for a CUDA graph's capture. */
    private void prepareDecode(Engine engine) {
        long begin = System.nanoTime();
        int readied = engine.prepareDecode(config.maxBatchSize());
        if (readied > 0) {
            System.err.printf(Locale.ROOT, "dejavu: %d decode step sizes readied in %.1f s%n", readied,
                    (System.nanoTime() - begin) / 1e9);
        }
    }

    /** Logs what sparsity the server offers; a sparse request to an engine without it gets a 400, not a dense answer. */
    private void reportSparsity(Engine engine) {
        if (sparsity.predictors() == null) {
            System.err.println("dejavu: sparsity " + sparsity.source() + "; requests run dense");
            return;
        }
        sparseAvailable = engine.sparseAvailable();
        if (!sparseAvailable) {
            System.err.println("dejavu: sparsity off: this " + engine.backend() + " engine does not run the predictors of "
                    + sparsity.source() + "; requests run dense");
            return;
        }
        System.err.printf(Locale.ROOT, "dejavu: sparsity on: predictors %s; requests without \"sparse\" run %s%n",
                sparsity.source(), config.sparseDefault() ? "sparse" : "dense");
    }

    /** Whether requests may ask for sparse execution. */
    boolean sparseAvailable() {
        return sparseAvailable;
    }

    /**
     * Graceful stop: no new requests; the queued and running ones get shutdown_grace_seconds to finish, then the
     * rest are cancelled (their clients get a "cancelled" finish).
     */
    @Override
    public Future<?> stop() {
        BatchScheduler batcher = scheduler;
        if (batcher != null) batcher.drain();
        // The wait runs off this verticle's thread: until the engine stops, the verticle's consumers must go on
        // taking cancellations (clients that leave) and answering new requests with SHUTTING_DOWN (a 503 at once).
        return vertx.executeBlocking(() -> {
            if (batcher != null && !batcher.awaitStopped(config.shutdownGraceSeconds(), TimeUnit.SECONDS)) {
                System.err.printf("dejavu: cancelling %d unfinished request(s)%n", batcher.activeCount());
                batcher.cancelAll();
                if (!batcher.awaitStopped(30, TimeUnit.SECONDS)) {
                    System.err.println("dejavu: the engine did not stop within 30 s of cancelling");
                    return null;
                }
            }
            if (relay != null) relay.close();
            if (model != null) model.close();
            return null;
        }, false);
    }

    EngineStatus status() {
        BatchScheduler batcher = scheduler;
        if (batcher == null) {
            return new EngineStatus(failure == null ? "loading" : "failed", config.backend(), failure, 0, 0,
                    config.maxBatchSize());
        }
        return new EngineStatus(batcher.state().name().toLowerCase(Locale.ROOT), batcher.backend(), null,
                batcher.activeCount() - batcher.waitingCount(), batcher.waitingCount(), batcher.maxBatchSize());
    }
}
