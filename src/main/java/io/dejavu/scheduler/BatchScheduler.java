package io.dejavu.scheduler;

import io.dejavu.engine.Engine;
import io.dejavu.engine.Sequence;
import io.dejavu.engine.Step;
import io.dejavu.engine.StepSparsity;
import io.dejavu.engine.TokenChoice;
import io.dejavu.generation.FinishReason;
import io.dejavu.generation.Generation;
import io.dejavu.generation.TokenOutput;
import io.dejavu.metrics.ServiceMetrics;
import io.dejavu.tokenizer.Tokenizer;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Deque;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedDeque;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;
import java.util.stream.IntStream;

/**
 * Continuous batching over one engine, on the engine's own thread. Every iteration retires cancelled requests,
 * admits waiting ones into free batch slots, and runs ONE engine forward pass holding a decode step for every
 * running sequence plus prompt chunks of the sequences still prefilling: at most prefillChunkTokens prompt tokens,
 * and at most what the decode rows leave of maxNumBatchedTokens, so that prompts do not stall the others' next token
 * (a step's time grows with its tokens; on a compute-bound engine, linearly). Finished sequences are retired and
 * their KV caches freed at once. Requests beyond the waiting queue's limit are refused at submission. An engine that
 * samples on its device picks there the next tokens of the members whose parameters allow it, so that only one int
 * per such sequence comes back rather than its logits; the others' logits come back and they sample on the host.
 *
 * <p>An engine whose KV cache is a fixed pool of blocks (the CUDA engine's) cannot hold every sequence at every
 * length. A request is admitted only when the blocks its whole prompt needs are free beside those the running
 * sequences' next steps need. When a decode step finds no free block, the newest running sequences are preempted,
 * as vLLM does: their blocks are freed, and they wait at the head of the queue. When room frees, their prompt and the
 * tokens generated so far are prefilled again, and generation goes on where it stopped. The client sees a pause,
 * never an error, and loses no token.
 *
 * <p>{@link #submit} and {@link #cancel} may be called from any thread; everything else runs on the engine thread,
 * which alone touches the engine (engines are not thread-safe). An engine failure fails the requests of that pass
 * only; the scheduler goes on with the others.
 */
public final class BatchScheduler {
    public enum State { STARTING, READY, DRAINING, STOPPED }

    private static final long IDLE_POLL_MILLIS = 50;
    /** From this many sequences sampling on the host in a step on, they sample in parallel. */
    private static final int PARALLEL_SAMPLING_BATCH = 8;

    private final Engine engine;
    private final Tokenizer tokenizer;
    private final int maxBatchSize;
    private final int prefillChunkTokens;
    private final int maxNumBatchedTokens;
    private final Consumer<GenerationEvent> events;
    private final ServiceMetrics metrics;
    private final LinkedBlockingQueue<Active> waiting;
    /** Preempted requests, the oldest first: admitted before any in {@link #waiting}. Changed by the engine thread. */
    private final Deque<Active> preempted = new ConcurrentLinkedDeque<>();
    /** A decode pass queued before the tokens of the one before it were read, or null. */
    private Ahead ahead;
    /** Queued and running requests by id, for cancellation from other threads. */
    private final Map<String, Active> active = new ConcurrentHashMap<>();
    private final List<Active> running = new ArrayList<>();
    private final CountDownLatch stopped = new CountDownLatch(1);
    private volatile State state = State.STARTING;
    /** When the last forward pass ended, while the engine is busy; 0 after an idle spell. */
    private long lastForwardEnd;

    /**
     * @param engine              taken over: the scheduler closes it when it stops
     * @param maxNumBatchedTokens at least maxBatchSize, so that a prompt advances beside a full batch
     * @param events              receives every event, on the engine thread; must not block
     */
    public BatchScheduler(Engine engine, Tokenizer tokenizer, int maxBatchSize, int queueLimit, int prefillChunkTokens,
                          int maxNumBatchedTokens, Consumer<GenerationEvent> events, ServiceMetrics metrics) {
        if (maxNumBatchedTokens < maxBatchSize) {
            throw new IllegalArgumentException("max_num_batched_tokens (" + maxNumBatchedTokens
                    + ") must be at least max_batch_size (" + maxBatchSize + ")");
        }
        this.engine = engine;
        this.tokenizer = tokenizer;
        this.maxBatchSize = maxBatchSize;
        this.prefillChunkTokens = prefillChunkTokens;
        this.maxNumBatchedTokens = maxNumBatchedTokens;
        this.events = events;
        this.metrics = metrics;
        this.waiting = new LinkedBlockingQueue<>(queueLimit);
    }

    /** Starts the engine thread. */
    public void start() {
        state = State.READY;
        Thread.ofPlatform().name("dejavu-engine").start(this::run);
    }

    public State state() {
        return state;
    }

    public String backend() {
        return engine.backend();
    }

    public int maxBatchSize() {
        return maxBatchSize;
    }

    /** Requests queued or running. */
    public int activeCount() {
        return active.size();
    }

    /** Requests waiting for a batch slot: queued, or preempted and waiting to resume. */
    public int waitingCount() {
        return waiting.size() + preempted.size();
    }

    /**
     * Queues a request. Its prompt and max_tokens must fit the model's context (the API checks them first).
     *
     * @throws IllegalArgumentException when the id is in use, the prompt leaves no room to generate, or the request
     *                                  asks for sparsity from an engine without predictors
     */
    public Admission submit(GenerationRequest request) {
        int context = engine.config().maxPositionEmbeddings();
        if (request.promptIds().length >= context) {
            throw new IllegalArgumentException("the prompt has " + request.promptIds().length
                    + " tokens; the model's context of " + context + " positions leaves no room to generate");
        }
        int blocks = kvBlocks(0, request.promptIds().length + 1);
        if (blocks > engine.kvCacheBlocks()) {
            throw new IllegalArgumentException("the prompt has " + request.promptIds().length + " tokens; with its "
                    + "first generated token that needs " + blocks + " KV cache blocks of " + engine.kvCacheBlockTokens()
                    + " positions, and the engine's KV cache has " + engine.kvCacheBlocks());
        }
        if (request.sparse() && !engine.sparseAvailable()) {
            throw new IllegalArgumentException("sparse = true, but the " + engine.backend()
                    + " engine has no sparsity predictors loaded");
        }
        if (state != State.READY) return Admission.SHUTTING_DOWN;
        Active entry = new Active(request, System.nanoTime());
        if (active.putIfAbsent(request.id(), entry) != null) {
            throw new IllegalArgumentException("request id " + request.id() + " is already in use");
        }
        if (!waiting.offer(entry)) {
            active.remove(request.id());
            return Admission.QUEUE_FULL;
        }
        return Admission.ACCEPTED;
    }

    /**
     * Cancels a queued or running request: a queued one ends at once, giving its place in the queue back (else
     * clients that gave up would keep others out until a batch slot freed), a running one within one engine step.
     */
    public void cancel(String requestId) {
        Active entry = active.get(requestId);
        if (entry == null) return;
        entry.cancelled = true;
        // Only one of this and the engine thread's poll can take the entry; it has no sequence yet.
        if (waiting.remove(entry)) finish(entry, FinishReason.CANCELLED, null);
    }

    /** Stops admitting new requests; the queued and running ones go on until {@link #cancelAll()}. */
    public void drain() {
        if (state == State.READY) state = State.DRAINING;
    }

    public void cancelAll() {
        active.values().forEach(entry -> entry.cancelled = true);
    }

    /** Waits for the engine thread to finish its work after {@link #drain()}. */
    public boolean awaitStopped(long timeout, TimeUnit unit) throws InterruptedException {
        return stopped.await(timeout, unit);
    }

    private void run() {
        try {
            while (state == State.READY || !active.isEmpty()) {
                try {
                    if (running.isEmpty()) dropAhead();
                    if (running.isEmpty() && preempted.isEmpty() && !awaitWork()) continue;
                    retireCancelled();
                    admitWaiting();
                    if (!running.isEmpty()) step();
                    metrics.queue(waitingCount(), running.size());
                    if (engine.kvCacheBlockTokens() > 0) {
                        metrics.kvCacheUsage(1 - (double) engine.freeKvCacheBlocks() / engine.kvCacheBlocks());
                    }
                } catch (RuntimeException | Error e) {
                    // Beyond a failed forward pass (step handles those): an Error such as running out of memory, or
                    // a bug. The running sequences' state is unknown, so they end with the error instead of leaving
                    // their clients waiting for tokens that would never come; the thread goes on serving.
                    e.printStackTrace();
                    failStep(List.copyOf(running), e);
                }
            }
        } finally {
            state = State.STOPPED;
            try {
                engine.close();
            } finally {
                stopped.countDown();
            }
        }
    }

    /** Blocks briefly for a request when nothing runs; false when none came. */
    private boolean awaitWork() {
        metrics.idle();
        lastForwardEnd = 0;
        metrics.queue(waiting.size(), 0);
        try {
            Active next = waiting.poll(IDLE_POLL_MILLIS, TimeUnit.MILLISECONDS);
            if (next == null) return false;
            admit(next);
            return true;
        } catch (InterruptedException e) {
            // Nothing interrupts the engine thread but the JVM going down: stop as a shutdown would, at once.
            drain();
            cancelAll();
            return true;
        }
    }

    private void retireCancelled() {
        for (Iterator<Active> it = running.iterator(); it.hasNext(); ) {
            Active entry = it.next();
            if (entry.cancelled) {
                it.remove();
                finish(entry, FinishReason.CANCELLED, null);
            }
        }
        for (Iterator<Active> it = preempted.iterator(); it.hasNext(); ) {
            Active entry = it.next();
            if (entry.cancelled) {
                it.remove();
                finish(entry, FinishReason.CANCELLED, null);
            }
        }
    }

    /**
     * Admits preempted requests, then waiting ones, in order, while there are batch slots and the KV cache has room
     * for the next one's whole prompt (see {@link #kvRoomFor}); the first that does not fit waits, and so do those
     * behind it, so that a long prompt is not passed over for ever.
     */
    private void admitWaiting() {
        while (running.size() < maxBatchSize) {
            Active next = preempted.peekFirst();
            if (next == null) next = waiting.peek();
            if (next == null || !kvRoomFor(next)) return;
            if (next == preempted.peekFirst()) preempted.pollFirst();
            else if (!waiting.remove(next)) continue;  // cancelled meanwhile: cancel() took it
            if (next.generation == null) admit(next);
            else readmit(next);
        }
    }

    /** KV cache blocks a sequence of {@code length} positions takes to grow by {@code more}; 0 for an unbounded cache. */
    private int kvBlocks(int length, int more) {
        int b = engine.kvCacheBlockTokens();
        return b == 0 ? 0 : (length + more + b - 1) / b - (length + b - 1) / b;
    }

    /**
     * Whether the KV cache has room for a request's whole context and first generated token, beside what the
     * running sequences are promised: one position each that decodes, and the rest of its context each that is still
     * prefilling. A request that fits no cache at all, even alone, fails here rather than wait for ever.
     */
    private boolean kvRoomFor(Active next) {
        if (engine.kvCacheBlockTokens() == 0) return true;
        long promised = 0;
        for (Active entry : running) {
            promised += kvBlocks(entry.sequence.length(), entry.decoding() ? 1 : entry.context.length - entry.prefilled + 1);
        }
        int needed = kvBlocks(0, next.context.length + 1);
        if (needed <= engine.freeKvCacheBlocks() - promised) return true;
        // Nothing running will free blocks: it does not fit the cache at all. (Unless cancel() took it meanwhile.)
        boolean taken = running.isEmpty() && (next == preempted.peekFirst() ? preempted.pollFirst() != null
                : waiting.remove(next));
        if (taken) {
            metrics.error("kv_cache");
            finish(next, FinishReason.ERROR, "the KV cache cannot hold this generation: it needs " + needed
                    + " blocks of " + engine.kvCacheBlockTokens() + " positions, and the cache has "
                    + engine.kvCacheBlocks());
        }
        return false;
    }

    private void admit(Active entry) {
        if (entry.cancelled) {
            finish(entry, FinishReason.CANCELLED, null);
            return;
        }
        GenerationRequest request = entry.request;
        int context = engine.config().maxPositionEmbeddings();
        int room = context - request.promptIds().length;
        try {
            entry.generation = new Generation(request.promptIds(),
                    request.params().withMaxTokens(Math.min(request.params().maxTokens(), room)), tokenizer,
                    engine.config().eosTokenId());
            entry.sequence = engine.newSequence();
        } catch (RuntimeException | Error e) {
            // Also an Error (a KV cache that does not fit in memory): the request is out of the queue and not yet
            // running, so only this answer can tell its client.
            metrics.error("engine");
            finish(entry, FinishReason.ERROR, "could not start the generation: " + e.getMessage());
            return;
        }
        metrics.promptTokens(request.promptIds().length);
        running.add(entry);
    }

    /** A preempted request back into the batch, with an empty KV cache that its context will fill again. */
    private void readmit(Active entry) {
        try {
            entry.sequence = engine.newSequence();
        } catch (RuntimeException | Error e) {
            metrics.error("engine");
            finish(entry, FinishReason.ERROR, "could not resume the generation: " + e.getMessage());
            return;
        }
        running.add(entry);
    }

    /**
     * Frees a running request's KV cache and queues it first in line: its prompt and the tokens it has generated so
     * far become the context to prefill when it is admitted again, whose last logits give its next token.
     */
    private void preempt(Active entry) {
        running.remove(entry);
        entry.sequence.close();
        entry.sequence = null;
        int[] prompt = entry.request.promptIds(), generated = entry.generation.generatedIds();
        entry.context = Arrays.copyOf(prompt, prompt.length + generated.length);
        System.arraycopy(generated, 0, entry.context, prompt.length, generated.length);
        entry.prefilled = 0;
        preempted.addFirst(entry);
        metrics.preempted();
    }

    /**
     * Makes room in the KV cache for the next position of every decoding sequence, the oldest first: where the free
     * blocks run short, the newest running sequences are preempted, down to the one that needs the block. A sequence
     * that fills the cache alone ends with an error. Returns the blocks left for prompt chunks.
     */
    private long makeRoomToDecode() {
        if (engine.kvCacheBlockTokens() == 0) return Long.MAX_VALUE;
        long reserved = 0;
        for (int i = 0; i < running.size(); i++) {
            Active entry = running.get(i);
            if (!entry.decoding()) continue;
            int need = kvBlocks(entry.sequence.length(), 1);
            while (need > engine.freeKvCacheBlocks() - reserved && running.getLast() != entry) preempt(running.getLast());
            if (need <= engine.freeKvCacheBlocks() - reserved) {
                reserved += need;
                continue;
            }
            if (i == 0) {
                running.remove(entry);
                metrics.error("kv_cache");
                finish(entry, FinishReason.ERROR, "the KV cache is full with this generation alone, at "
                        + entry.sequence.length() + " positions (" + engine.kvCacheBlocks() + " blocks of "
                        + engine.kvCacheBlockTokens() + ")");
            } else {
                preempt(entry);
            }
            i--;
        }
        return engine.freeKvCacheBlocks() - reserved;
    }

    /**
     * One batched forward pass over every running sequence; or the pass queued ahead in the iteration before, whose
     * tokens are read now. A decode pass whose tokens are all picked on the device has the pass after it queued
     * before its tokens are read, where the batch can stay as it is ({@link #mayRunAhead}), so that the device does
     * not wait for the host between the two: the tokens are read, streamed out and checked for stops meanwhile.
     */
    private void step() {
        if (ahead != null) {
            stepAhead();
            return;
        }
        long freeBlocks = makeRoomToDecode();
        if (running.isEmpty()) return;
        List<Step> steps = new ArrayList<>(running.size());
        List<Active> members = new ArrayList<>(running.size());
        int decodeRows = 0;
        for (Active entry : running) if (entry.decoding()) decodeRows++;
        int prefillBudget = Math.min(prefillChunkTokens, maxNumBatchedTokens - decodeRows);
        for (Active entry : running) {
            int[] context = entry.context;
            if (!entry.decoding()) {
                int chunk = Math.min(prefillBudget, context.length - entry.prefilled);
                while (chunk > 0 && kvBlocks(entry.sequence.length(), chunk) > freeBlocks) chunk--;
                if (chunk == 0) continue;
                freeBlocks -= kvBlocks(entry.sequence.length(), chunk);
                steps.add(Step.last(entry.sequence, Arrays.copyOfRange(context, entry.prefilled, entry.prefilled + chunk)));
                entry.chunk = chunk;
                prefillBudget -= chunk;
            } else {
                // Deja Vu runs sparse at decode only; prompts stay dense, as the authors' code does.
                steps.add(Step.last(entry.sequence, entry.nextToken).withSparse(entry.request.sparse()));
            }
            members.add(entry);
        }
        if (steps.isEmpty()) {
            // Only prompts, and no KV cache block for any of them (the decoding sequences grew into the room they
            // were promised): the newest gives its blocks up, so that the others advance.
            preempt(running.getLast());
            return;
        }
        List<TokenChoice> choices = deviceChoices(members);
        long start = System.nanoTime();
        if (lastForwardEnd > 0) metrics.stepGap((start - lastForwardEnd) / 1e9);
        boolean[] sparse = new boolean[steps.size()];
        for (int i = 0; i < sparse.length; i++) sparse[i] = steps.get(i).sparse();
        if (mayRunAhead(members, choices)) {
            Engine.PendingTokens pending;
            try {
                pending = engine.submitNextTokens(steps, choices);
            } catch (RuntimeException e) {
                failStep(members, e);
                return;
            }
            finishAhead(pending, members, choices, start);
            return;
        }
        Engine.Picks picks;
        try {
            picks = choices != null ? engine.nextTokensOrLogits(steps, choices) : lastLogits(engine.forward(steps));
        } catch (RuntimeException e) {
            failStep(members, e);
            return;
        }
        long end = System.nanoTime();
        deliver(members, picks, sparse, engine.lastStepSparsity(), end - start, end);
    }

    /** A decode pass queued ahead: its tokens to come, its members and their choices. */
    private record Ahead(Engine.PendingTokens pending, List<Active> members, List<TokenChoice> choices) {
    }

    /** The pass queued ahead has no member left running: its tokens are not wanted. */
    private void dropAhead() {
        if (ahead == null) return;
        Engine.PendingTokens pending = ahead.pending();
        ahead = null;
        pending.await();  // an engine failure surfaces here, with no request left to fail, or in the next pass
    }

    /** Reads the tokens of the pass queued ahead (see {@link #finishAhead}). */
    private void stepAhead() {
        Ahead queued = ahead;
        ahead = null;
        finishAhead(queued.pending(), queued.members(), queued.choices(), lastForwardEnd);
    }

    /**
     * Queues the pass after {@code pending} where the batch can stay as it is, then reads pending's tokens and
     * delivers those of its members still running: a member that ended after pending was queued (its last token, a
     * stop, a cancel) has its row dropped. {@code start}: when pending was queued, or when the pass before it ended.
     */
    private void finishAhead(Engine.PendingTokens pending, List<Active> members, List<TokenChoice> choices, long start) {
        if (mayRunAhead(members, choices)) {
            // placeholder tokens: each sequence is fed what pending picks for it
            List<Step> next = new ArrayList<>(members.size());
            for (Active entry : members) next.add(new Step(entry.sequence, new int[]{0}, false, entry.request.sparse()));
            try {
                ahead = new Ahead(engine.submitFollowing(pending, next, choices), members, choices);
            } catch (RuntimeException e) {
                failStep(members, e);
                return;
            }
        }
        // the members still running, and which of pending's rows is each one's
        List<Active> live = new ArrayList<>(members.size());
        int[] liveRows = new int[members.size()];
        for (int i = 0; i < members.size(); i++) {
            if (!running.contains(members.get(i))) continue;
            liveRows[live.size()] = i;
            live.add(members.get(i));
        }
        int[] tokens;
        try {
            tokens = pending.await();
        } catch (RuntimeException e) {
            ahead = null;
            failStep(live, e);
            return;
        }
        if (live.isEmpty()) return;
        long end = System.nanoTime();
        int[] kept = new int[live.size()];
        for (int k = 0; k < kept.length; k++) kept[k] = tokens[liveRows[k]];
        deliver(live, new Engine.Picks(kept, new float[live.size()][]), sparseRequests(live), pending.sparsity(),
                end - Math.max(start, lastForwardEnd), end);
    }

    /** Which members asked for sparse decoding (a pass queued ahead decodes each as its request asks). */
    private static boolean[] sparseRequests(List<Active> members) {
        boolean[] sparse = new boolean[members.size()];
        for (int i = 0; i < sparse.length; i++) sparse[i] = members.get(i).request.sparse();
        return sparse;
    }

    /**
     * Whether a decode pass of these members may have the next pass queued behind it before its tokens are read:
     * the engine runs ahead; the members are every running sequence, all decoding and picking on the device;
     * none is cancelled; no request waits for a free slot; and the KV cache has a position more for each.
     */
    private boolean mayRunAhead(List<Active> members, List<TokenChoice> choices) {
        if (!engine.runsAhead() || choices == null || members.size() != running.size() || !preempted.isEmpty()
                || (!waiting.isEmpty() && running.size() < maxBatchSize)) {
            return false;
        }
        long blocks = 0;
        for (int i = 0; i < members.size(); i++) {
            Active entry = members.get(i);
            if (!entry.decoding() || entry.cancelled || choices.get(i) == null || !running.contains(entry)) {
                return false;
            }
            blocks += kvBlocks(entry.sequence.length(), 1);
        }
        return blocks <= engine.freeKvCacheBlocks();
    }

    /**
     * A pass's results to its members: tokens sampled or picked, streamed out; finished ones retired.
     *
     * @param sparse   which members' steps asked for sparse execution
     * @param sparsity what the pass computed of its sparse tokens, or null
     */
    private void deliver(List<Active> members, Engine.Picks picks, boolean[] sparse, StepSparsity sparsity,
                         long stepNanos, long end) {
        lastForwardEnd = end;
        double[] mlpSkipped = sparsity == null ? null : sparsity.mlpSkipped();
        double[] headsSkipped = sparsity == null ? null : sparsity.headsSkipped();
        Object[] sampled = sample(members, picks);
        int generated = 0;
        for (int i = 0; i < members.size(); i++) {
            Active entry = members.get(i);
            switch (sampled[i]) {
                case null -> { } // still prefilling
                case RuntimeException e -> {
                    metrics.error("sampling");
                    running.remove(entry);
                    finish(entry, FinishReason.ERROR, "choosing the next token failed: " + e.getMessage());
                }
                case TokenOutput output -> {
                    generated++;
                    emitToken(entry, output, sparse[i] ? mlpSkipped : null, sparse[i] ? headsSkipped : null,
                            stepNanos, members.size(), end);
                    entry.nextToken = output.tokenId();
                    if (output.finished()) {
                        running.remove(entry);
                        finish(entry, output.finish(), null);
                    }
                }
                default -> throw new IllegalStateException("unexpected " + sampled[i]);
            }
        }
        metrics.step(members.size(), generated, stepNanos, end, mlpSkipped);
    }

    /**
     * How the engine is to pick each member's next token on its device, null for a member that needs the host's
     * sampler (penalties, min-p, log-probabilities: its logits come back instead); null in all when the engine does
     * not sample on a device or no member can. A member still prefilling gets a pick it ignores.
     */
    private List<TokenChoice> deviceChoices(List<Active> members) {
        if (!engine.samplesOnDevice()) return null;
        List<TokenChoice> choices = new ArrayList<>(members.size());
        boolean any = false;
        for (Active entry : members) {
            TokenChoice choice = entry.generation.deviceChoice();
            any |= choice != null;
            choices.add(choice);
        }
        return any ? choices : null;
    }

    /** A forward pass's last logits of each step, as picks that the host makes. */
    private static Engine.Picks lastLogits(List<float[][]> logits) {
        float[][] last = new float[logits.size()][];
        for (int i = 0; i < last.length; i++) last[i] = logits.get(i)[logits.get(i).length - 1];
        return new Engine.Picks(new int[last.length], last);
    }

    /**
     * Each member's next token, as the engine picked it or from its logits: per member a {@link TokenOutput}, the
     * RuntimeException that sampling threw, or null for a member whose prompt is not yet fully prefilled. Sampling is
     * independent per sequence and, at full vocabulary width, costs enough that a large batch samples in parallel,
     * which keeps the gap between engine steps short.
     */
    private Object[] sample(List<Active> members, Engine.Picks picks) {
        Object[] sampled = new Object[members.size()];
        boolean[] ready = new boolean[members.size()];
        int onHost = 0;
        for (int i = 0; i < members.size(); i++) {
            Active entry = members.get(i);
            if (entry.chunk > 0) {
                entry.prefilled += entry.chunk;
                entry.chunk = 0;
            }
            ready[i] = entry.decoding();
            if (ready[i] && picks.logits()[i] != null) onHost++;
        }
        IntStream indexes = IntStream.range(0, members.size());
        (onHost >= PARALLEL_SAMPLING_BATCH ? indexes.parallel() : indexes).forEach(i -> {
            if (!ready[i]) return;
            Generation generation = members.get(i).generation;
            float[] logits = picks.logits()[i];
            try {
                sampled[i] = logits != null ? generation.next(logits) : generation.next(picks.tokens()[i]);
            } catch (RuntimeException e) {
                sampled[i] = e;
            }
        });
        return sampled;
    }

    /** @param mlpSkipped,headsSkipped the step's per-layer shares skipped when this token's step ran sparse, else null */
    private void emitToken(Active entry, TokenOutput output, double[] mlpSkipped, double[] headsSkipped, long stepNanos,
                           int batchSize, long now) {
        if (entry.firstTokenNanos < 0) {
            entry.firstTokenNanos = now - entry.submittedNanos;
            metrics.firstToken(entry.firstTokenNanos / 1e9);
        } else {
            metrics.interToken((now - entry.lastTokenNanos) / 1e9);
        }
        entry.lastTokenNanos = now;
        events.accept(new GenerationEvent.Token(entry.request.id(), entry.emitted++, output.tokenId(), output.text(),
                output.logprob(), output.topLogprobs(), mlpSkipped, headsSkipped, stepNanos, batchSize,
                now - entry.submittedNanos));
    }

    /** The engine failed: the sequences of this pass are in an unknown state, so they end; the rest go on. */
    private void failStep(List<Active> members, Throwable e) {
        String message = "the engine failed: " + (e.getMessage() != null ? e.getMessage() : e.getClass().getSimpleName());
        System.err.println("dejavu: " + message + " (failing " + members.size() + " request(s))");
        for (Active entry : members) {
            metrics.error("engine");
            running.remove(entry);
            finish(entry, FinishReason.ERROR, message);
        }
    }

    private void finish(Active entry, FinishReason reason, String error) {
        if (entry.sequence != null) {
            try {
                entry.sequence.close();
            } catch (RuntimeException e) {
                System.err.println("dejavu: freeing the KV cache of " + entry.request.id() + " failed: " + e.getMessage());
            }
        }
        active.remove(entry.request.id());
        metrics.finished(reason.wireName());
        long now = System.nanoTime();
        events.accept(new GenerationEvent.Finish(entry.request.id(), reason, entry.request.promptIds().length,
                entry.generation == null ? 0 : entry.generation.generatedCount(), error, entry.firstTokenNanos,
                now - entry.submittedNanos));
    }

    /** A request's state in the scheduler. */
    private static final class Active {
        final GenerationRequest request;
        final long submittedNanos;
        volatile boolean cancelled;
        Generation generation;
        Sequence sequence;
        /** The tokens to prefill: the prompt, or after a preemption the prompt and the tokens generated before it. */
        int[] context;
        /** Context tokens in the KV cache. */
        int prefilled;
        /** Context tokens in the pass under way. */
        int chunk;
        int nextToken;
        int emitted;
        long firstTokenNanos = -1;
        long lastTokenNanos;

        Active(GenerationRequest request, long submittedNanos) {
            this.request = request;
            this.submittedNanos = submittedNanos;
            this.context = request.promptIds();
        }

        /** Its context is in the KV cache: each step adds the token it generated last. */
        boolean decoding() {
            return prefilled == context.length;
        }
    }
}
