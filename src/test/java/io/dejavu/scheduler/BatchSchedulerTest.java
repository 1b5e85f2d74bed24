package io.dejavu.scheduler;

import io.dejavu.engine.Engine;
import io.dejavu.engine.ForwardingEngine;
import io.dejavu.engine.Sequence;
import io.dejavu.engine.Step;
import io.dejavu.engine.TokenChoice;
import io.dejavu.engine.cpu.CpuEngine;
import io.dejavu.generation.FinishReason;
import io.dejavu.generation.Generation;
import io.dejavu.generation.GenerationParams;
import io.dejavu.generation.Generator;
import io.dejavu.generation.Prompts;
import io.dejavu.metrics.ServiceMetrics;
import io.dejavu.model.OptModel;
import io.dejavu.sampling.SamplingParams;
import io.dejavu.tokenizer.Tokenizer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Continuous batching on the real CPU engine with opt-demo. */
class BatchSchedulerTest {
    private static final Path MODEL = Path.of("models/opt-demo");
    /** Prompts of different lengths, for tests that batch four requests. */
    private static final List<String> TEXTS = List.of("In the beginning God created", "The",
            "import os\nimport sys\n\ndef main():", "Mr. Speaker, Mr. President, distinguished Members of Congress");
    private static OptModel model;
    private static Tokenizer tokenizer;
    private final BlockingQueue<GenerationEvent> events = new LinkedBlockingQueue<>();
    /** How many forward passes the engine had begun when each request's finish event was sent. */
    private final Map<String, Integer> passesAtFinish = new ConcurrentHashMap<>();
    private RecordingEngine engine;
    private final ServiceMetrics metrics = new ServiceMetrics();
    private BatchScheduler scheduler;

    @BeforeAll
    static void load() {
        model = OptModel.load(MODEL);
        tokenizer = Tokenizer.load(MODEL);
    }

    @AfterAll
    static void unload() {
        model.close();
    }

    @AfterEach
    void stopScheduler() throws InterruptedException {
        scheduler.drain();
        scheduler.cancelAll();
        assertTrue(scheduler.awaitStopped(30, TimeUnit.SECONDS));
        assertEquals(Set.of(), engine.open, "every KV cache is freed");
    }

    /** The CPU engine, recording the shape of every forward pass and the open sequences. */
    private static class RecordingEngine extends ForwardingEngine {
        final List<int[]> passes = new CopyOnWriteArrayList<>();
        final Set<Sequence> open = ConcurrentHashMap.newKeySet();

        RecordingEngine() {
            super(new CpuEngine(model, 1));
        }

        @Override
        public Sequence newSequence() {
            Counted sequence = new Counted(engine.newSequence());
            open.add(sequence);
            return sequence;
        }

        /** The engine's sequence, counted while open. */
        private final class Counted implements Sequence {
            final Sequence sequence;

            Counted(Sequence sequence) {
                this.sequence = sequence;
            }

            @Override
            public int length() {
                return sequence.length();
            }

            @Override
            public void close() {
                sequence.close();
                open.remove(this);
            }
        }

        @Override
        public List<float[][]> forward(List<Step> steps) {
            passes.add(steps.stream().mapToInt(s -> s.tokens().length).toArray());
            return engine.forward(steps.stream()
                    .map(s -> new Step(((Counted) s.sequence()).sequence, s.tokens(), s.allLogits())).toList());
        }
    }

    /**
     * As if its KV cache were a pool of {@code blocks} blocks of 4 positions, as the CUDA engine's is: a pass that
     * would need more fails, as the CUDA engine's does.
     */
    private static final class BoundedKvEngine extends RecordingEngine {
        static final int BLOCK_TOKENS = 4;
        final int blocks;

        BoundedKvEngine(int blocks) {
            this.blocks = blocks;
        }

        @Override
        public int kvCacheBlockTokens() {
            return BLOCK_TOKENS;
        }

        @Override
        public int kvCacheBlocks() {
            return blocks;
        }

        @Override
        public int freeKvCacheBlocks() {
            return blocks - held(Map.of());
        }

        /** Blocks the open sequences hold once each has grown by {@code growth} (none where absent). */
        private int held(Map<Sequence, Integer> growth) {
            int held = 0;
            for (Sequence s : open) held += (s.length() + growth.getOrDefault(s, 0) + BLOCK_TOKENS - 1) / BLOCK_TOKENS;
            return held;
        }

        @Override
        public List<float[][]> forward(List<Step> steps) {
            Map<Sequence, Integer> growth = new HashMap<>();
            for (Step step : steps) growth.put(step.sequence(), step.tokens().length);
            if (held(growth) > blocks) {
                throw new IllegalStateException("KV cache full: the pass needs " + held(growth) + " blocks of " + blocks);
            }
            return super.forward(steps);
        }
    }

    /**
     * As if it sampled on a device: {@link #nextTokensOrLogits} picks by the host rule that the CUDA engine's sampler
     * reproduces ({@link TokenChoice#pick}), and records each pass's choices.
     */
    private static class DeviceSamplingEngine extends RecordingEngine {
        final List<List<TokenChoice>> picks = new CopyOnWriteArrayList<>();

        @Override
        public boolean samplesOnDevice() {
            return true;
        }

        @Override
        public Picks nextTokensOrLogits(List<Step> steps, List<TokenChoice> choices) {
            picks.add(new ArrayList<>(choices));
            List<float[][]> logits = forward(steps);
            int[] tokens = new int[steps.size()];
            float[][] last = new float[steps.size()][];
            for (int i = 0; i < tokens.length; i++) {
                if (choices.get(i) == null) last[i] = logits.get(i)[0];
                else tokens[i] = choices.get(i).pick(logits.get(i)[0], steps.get(i).sequence().length() - 1);
            }
            return new Picks(tokens, last);
        }
    }

    private void start(int maxBatch, int queueLimit, int prefillChunk) {
        start(maxBatch, queueLimit, prefillChunk, maxBatch + prefillChunk);
    }

    private void start(int maxBatch, int queueLimit, int prefillChunk, int maxNumBatchedTokens) {
        start(new RecordingEngine(), maxBatch, queueLimit, prefillChunk, maxNumBatchedTokens);
    }

    private void start(RecordingEngine recording, int maxBatch, int queueLimit, int prefillChunk,
                       int maxNumBatchedTokens) {
        engine = recording;
        scheduler = new BatchScheduler(engine, tokenizer, maxBatch, queueLimit, prefillChunk, maxNumBatchedTokens, event -> {
            if (event instanceof GenerationEvent.Finish) passesAtFinish.put(event.requestId(), engine.passes.size());
            events.add(event);
        }, metrics);
        scheduler.start();
    }

    private static int[] prompt(String text) {
        return Prompts.withBos(tokenizer, model.config(), text);
    }

    private static GenerationParams greedy(int maxTokens) {
        return GenerationParams.of(maxTokens, SamplingParams.greedy());
    }

    /** Waits until every id finished; returns each one's token ids, checking they arrive in order and once. */
    private Map<String, List<Integer>> collect(List<String> ids, Map<String, FinishReason> reasons) throws InterruptedException {
        Map<String, List<Integer>> tokens = new HashMap<>();
        ids.forEach(id -> tokens.put(id, new ArrayList<>()));
        return collect(tokens, reasons);
    }

    /** As above, given the tokens already seen per id; events of other ids are skipped. */
    private Map<String, List<Integer>> collect(Map<String, List<Integer>> tokens, Map<String, FinishReason> reasons)
            throws InterruptedException {
        int finished = 0;
        while (finished < tokens.size()) {
            GenerationEvent event = events.poll(120, TimeUnit.SECONDS);
            assertNotNull(event, "no event within 120 s");
            if (!tokens.containsKey(event.requestId())) continue;
            switch (event) {
                case GenerationEvent.Token token -> {
                    List<Integer> list = tokens.get(token.requestId());
                    assertEquals(list.size(), token.index(), "token indexes run 0, 1, 2, ...");
                    list.add(token.tokenId());
                }
                case GenerationEvent.Finish finish -> {
                    assertEquals(tokens.get(finish.requestId()).size(), finish.completionTokens());
                    reasons.put(finish.requestId(), finish.reason());
                    finished++;
                }
            }
        }
        return tokens;
    }

    /**
     * As if its decode passes ran ahead, as the CUDA engine's do: the scheduler queues the next pass before it reads a
     * pass's tokens (here the interface's defaults run each at once), and counts those it queued that way.
     */
    private static final class RunAheadEngine extends DeviceSamplingEngine {
        final AtomicInteger following = new AtomicInteger();

        @Override
        public boolean runsAhead() {
            return true;
        }

        @Override
        public PendingTokens submitFollowing(PendingTokens previous, List<Step> steps, List<TokenChoice> choices) {
            following.incrementAndGet();
            return super.submitFollowing(previous, steps, choices);
        }
    }

    /**
     * Submits four texts at once as greedy requests of {@code maxTokens} ("r0".."r3"), and checks that each gets the
     * tokens and the finish it gets alone.
     */
    private void assertEachGetsWhatItGetsAlone(int maxTokens, String how) throws InterruptedException {
        List<String> ids = new ArrayList<>();
        for (int i = 0; i < TEXTS.size(); i++) {
            ids.add("r" + i);
            assertEquals(Admission.ACCEPTED,
                    scheduler.submit(new GenerationRequest("r" + i, prompt(TEXTS.get(i)), greedy(maxTokens))));
        }
        Map<String, FinishReason> reasons = new HashMap<>();
        Map<String, List<Integer>> batched = collect(ids, reasons);

        try (Engine alone = new CpuEngine(model, 1)) {
            Generator generator = new Generator(alone, tokenizer);
            for (int i = 0; i < TEXTS.size(); i++) {
                Generation expected = generator.generate(prompt(TEXTS.get(i)), greedy(maxTokens), output -> { });
                assertArrayEquals(expected.generatedIds(), batched.get("r" + i).stream().mapToInt(Integer::intValue).toArray(),
                        "request " + i + ", " + how);
                assertEquals(expected.finishReason(), reasons.get("r" + i));
            }
        }
    }

    @Test
    void batchedChunkedGenerationEqualsEachRequestAlone() throws InterruptedException {
        start(3, 16, 5);
        assertEachGetsWhatItGetsAlone(10, "batched with others and prefilled in chunks");
        for (int[] pass : engine.passes) {
            assertTrue(pass.length <= 3, "at most max_batch_size sequences per pass");
            int prefill = 0;
            for (int tokens : pass) if (tokens > 1) prefill += tokens;
            assertTrue(prefill <= 5, "at most prefill_chunk_tokens prompt tokens per pass");
        }
    }

    /**
     * An engine that samples on its device picks every token of requests whose parameters it can follow, and gives
     * the same greedy tokens as the host; a request with a penalty gets its logits in the same passes and samples on
     * the host, and a pass of such requests alone is an ordinary forward pass.
     */
    @Test
    void anEngineThatSamplesOnItsDevicePicksWhereTheParametersAllow() throws InterruptedException {
        DeviceSamplingEngine device = new DeviceSamplingEngine();
        start(device, 2, 16, 8, 10);
        String text = "In the beginning God created";
        scheduler.submit(new GenerationRequest("device", prompt(text), greedy(12)));
        Map<String, FinishReason> reasons = new HashMap<>();
        List<Integer> got = collect(List.of("device"), reasons).get("device");
        assertEquals(engine.passes.size(), device.picks.size(), "every pass picked on the device");
        for (List<TokenChoice> pass : device.picks) {
            for (TokenChoice choice : pass) {
                assertTrue(choice.isGreedy());
                assertEquals(tokenizer.vocabSize(), choice.vocabLimit());
            }
        }
        try (Engine alone = new CpuEngine(model, 1)) {
            Generation expected = new Generator(alone, tokenizer).generate(prompt(text), greedy(12), output -> { });
            assertArrayEquals(expected.generatedIds(), got.stream().mapToInt(Integer::intValue).toArray());
        }

        int picksBefore = device.picks.size();
        GenerationParams penalized = GenerationParams.of(12, SamplingParams.greedy().withPresencePenalty(0.5));
        scheduler.submit(new GenerationRequest("host", prompt(text), penalized));
        scheduler.submit(new GenerationRequest("device2", prompt("The"), greedy(4)));
        Map<String, List<Integer>> mixed = collect(List.of("host", "device2"), reasons);
        assertEquals(12, mixed.get("host").size());
        List<List<TokenChoice>> later = device.picks.subList(picksBefore, device.picks.size());
        assertTrue(later.stream().anyMatch(pass -> pass.size() == 2 && pass.contains(null)
                        && pass.stream().anyMatch(java.util.Objects::nonNull)),
                "a pass held both: the penalized request's logits and the other's pick");
        int passesWithPicks = device.picks.size();
        int passesBefore = engine.passes.size();
        scheduler.submit(new GenerationRequest("host2", prompt(text), penalized.withMaxTokens(3)));
        collect(List.of("host2"), reasons);
        assertEquals(passesWithPicks, device.picks.size(), "a pass with no pick on the device is a forward pass");
        assertTrue(engine.passes.size() > passesBefore);
    }

    /** The passes from the given count on, as they are now: a running sequence may be adding more. */
    private List<int[]> passesSince(int before) {
        List<int[]> now = List.copyOf(engine.passes);
        return now.subList(before, now.size());
    }

    /** A long prompt is prefilled in chunks while a running sequence gets a token at every pass. */
    @Test
    void aLongPromptDoesNotStallTheRunningSequence() throws InterruptedException {
        start(4, 16, 8);
        scheduler.submit(new GenerationRequest("short", prompt("The"), greedy(40)));
        GenerationEvent first = events.poll(60, TimeUnit.SECONDS);
        assertTrue(first instanceof GenerationEvent.Token);
        int[] longPrompt = prompt("And God said, Let there be light: and there was light. ".repeat(4));
        assertTrue(longPrompt.length > 40);
        int before = engine.passes.size();
        scheduler.submit(new GenerationRequest("long", longPrompt, greedy(2)));
        collect(List.of("long"), new HashMap<>());
        List<int[]> prefillPasses = passesSince(before).stream()
                .filter(pass -> Arrays.stream(pass).anyMatch(t -> t > 1)).toList();
        assertTrue(prefillPasses.size() >= longPrompt.length / 8, "the prompt went in chunks of at most 8");
        for (int[] pass : prefillPasses) {
            assertTrue(Arrays.stream(pass).anyMatch(t -> t == 1), "the running sequence decodes in the same pass");
        }
    }

    /**
     * With a token budget, the prompt chunks get what the decode rows leave: a long prompt beside three decoding
     * sequences goes in 2 tokens a pass (5 - 3), and every pass holds at most 5 tokens, yet the results are those of
     * each request alone.
     */
    @Test
    void promptChunksGetWhatTheDecodeRowsLeaveOfTheTokenBudget() throws InterruptedException {
        start(4, 16, 8, 5);
        List<String> ids = List.of("a", "b", "c");
        for (String id : ids) scheduler.submit(new GenerationRequest(id, prompt("The"), greedy(30)));
        Map<String, List<Integer>> seen = new HashMap<>();
        ids.forEach(id -> seen.put(id, new ArrayList<>()));
        while (seen.values().stream().anyMatch(List::isEmpty)) {
            if (events.poll(60, TimeUnit.SECONDS) instanceof GenerationEvent.Token token) {
                seen.get(token.requestId()).add(token.tokenId());
            }
        }
        int[] longPrompt = prompt("And God said, Let there be light: and there was light.");
        int before = engine.passes.size();
        scheduler.submit(new GenerationRequest("long", longPrompt, greedy(2)));
        seen.put("long", new ArrayList<>());
        Map<String, FinishReason> reasons = new HashMap<>();
        Map<String, List<Integer>> tokens = collect(seen, reasons);

        List<int[]> passes = passesSince(before);
        for (int[] pass : passes) {
            int decodeRows = (int) Arrays.stream(pass).filter(t -> t == 1).count();
            assertTrue(Arrays.stream(pass).sum() <= 5, "at most max_num_batched_tokens tokens in a pass: "
                    + Arrays.toString(pass));
            if (decodeRows == 3) {
                assertTrue(Arrays.stream(pass).allMatch(t -> t <= 2), "2 prompt tokens beside 3 decode rows: "
                        + Arrays.toString(pass));
            }
        }
        assertTrue(passes.stream().anyMatch(pass -> pass.length == 4 && Arrays.stream(pass).anyMatch(t -> t == 2)),
                "a chunk of 2 prompt tokens went in beside the three decoding sequences");
        try (Engine alone = new CpuEngine(model, 1)) {
            Generator generator = new Generator(alone, tokenizer);
            assertArrayEquals(generator.generate(longPrompt, greedy(2), output -> { }).generatedIds(),
                    tokens.get("long").stream().mapToInt(Integer::intValue).toArray());
            assertArrayEquals(generator.generate(prompt("The"), greedy(30), output -> { }).generatedIds(),
                    tokens.get("a").stream().mapToInt(Integer::intValue).toArray());
        }
    }

    @Test
    void cancellingFreesTheSlotAtTheNextStep() throws InterruptedException {
        start(1, 4, 64);
        scheduler.submit(new GenerationRequest("a", prompt("And the LORD"), greedy(500)));
        scheduler.submit(new GenerationRequest("b", prompt("The"), greedy(3)));
        GenerationEvent first = events.poll(60, TimeUnit.SECONDS);
        assertTrue(first instanceof GenerationEvent.Token token && token.requestId().equals("a"));
        int passesAtCancel = engine.passes.size();
        scheduler.cancel("a");
        Map<String, FinishReason> reasons = new HashMap<>();
        collect(new HashMap<>(Map.of("a", new ArrayList<>(List.of(((GenerationEvent.Token) first).tokenId())),
                "b", new ArrayList<>())), reasons);
        assertEquals(FinishReason.CANCELLED, reasons.get("a"));
        // At most the pass under way (or about to start) when cancel was called; the next one is b's.
        assertTrue(passesAtFinish.get("a") <= passesAtCancel + 1,
                "cancelled after " + (passesAtFinish.get("a") - passesAtCancel) + " more passes");
        assertEquals(FinishReason.LENGTH, reasons.get("b"));
    }

    @Test
    void cancellingAWaitingRequestEndsItAtOnceAndFreesItsQueuePlace() throws InterruptedException {
        start(1, 1, 64);
        scheduler.submit(new GenerationRequest("running", prompt("The"), greedy(500)));
        assertTrue(events.poll(60, TimeUnit.SECONDS) instanceof GenerationEvent.Token);
        assertEquals(Admission.ACCEPTED, scheduler.submit(new GenerationRequest("waiting", prompt("The"), greedy(1))));
        scheduler.cancel("waiting");
        assertEquals(0, scheduler.waitingCount());
        assertEquals(Admission.ACCEPTED, scheduler.submit(new GenerationRequest("next", prompt("The"), greedy(1))));
        Map<String, FinishReason> reasons = new HashMap<>();
        collect(List.of("waiting"), reasons);
        assertEquals(FinishReason.CANCELLED, reasons.get("waiting"));
    }

    /**
     * With an engine that runs ahead, decode passes have the next one queued before their tokens are read; requests
     * that end at different steps (so that a pass queued ahead holds some that have ended) and one that joins later
     * each get exactly the tokens they get alone.
     */
    @Test
    void passesQueuedAheadGiveEachRequestTheTokensItGetsAlone() throws InterruptedException {
        RunAheadEngine runAhead = new RunAheadEngine();
        start(runAhead, 4, 16, 5, 9);
        List<String> ids = new ArrayList<>();
        for (int i = 0; i < TEXTS.size(); i++) {
            ids.add("r" + i);
            scheduler.submit(new GenerationRequest("r" + i, prompt(TEXTS.get(i)), greedy(6 + 3 * i)));
        }
        Map<String, FinishReason> reasons = new HashMap<>();
        Map<String, List<Integer>> got = collect(ids, reasons);
        int queuedAhead = runAhead.following.get();
        scheduler.submit(new GenerationRequest("late", prompt(TEXTS.get(1)), greedy(8)));
        got.putAll(collect(List.of("late"), reasons));
        try (Engine alone = new CpuEngine(model, 1)) {
            Generator generator = new Generator(alone, tokenizer);
            for (int i = 0; i < TEXTS.size(); i++) {
                Generation expected = generator.generate(prompt(TEXTS.get(i)), greedy(6 + 3 * i), output -> { });
                assertArrayEquals(expected.generatedIds(), got.get("r" + i).stream().mapToInt(Integer::intValue).toArray(),
                        "request " + i);
                assertEquals(FinishReason.LENGTH, reasons.get("r" + i));
            }
            Generation expected = generator.generate(prompt(TEXTS.get(1)), greedy(8), output -> { });
            assertArrayEquals(expected.generatedIds(), got.get("late").stream().mapToInt(Integer::intValue).toArray());
        }
        assertTrue(queuedAhead > 10, "most decode passes were queued ahead: " + queuedAhead);
    }

    /**
     * Four generations whose KV caches do not fit the pool together, though each fits alone: the newest are preempted
     * and prefilled again later, and every generation gets every token, the same as when it runs alone.
     */
    @Test
    void aFullKvCachePreemptsTheNewestAndLosesNoToken() throws InterruptedException {
        start(new BoundedKvEngine(16), 4, 16, 5, 9);
        assertEachGetsWhatItGetsAlone(24, "through preemptions");
        String rendered = metrics.render();
        long preemptions = rendered.lines().filter(l -> l.startsWith("dejavu_preemptions_total "))
                .mapToLong(l -> Long.parseLong(l.split(" ")[1])).sum();
        assertTrue(preemptions > 0, "the pool of 16 blocks held all four only by preempting some:\n" + rendered);
    }

    /** A prompt the whole KV cache cannot hold is refused when submitted, saying why. */
    @Test
    void aPromptLargerThanTheKvCacheIsRefused() {
        start(new BoundedKvEngine(2), 1, 4, 5, 6);
        IllegalArgumentException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                () -> scheduler.submit(new GenerationRequest("long", prompt("import os\nimport sys\n\ndef main():"),
                        greedy(4))));
        assertTrue(e.getMessage().contains("KV cache"), e.getMessage());
    }

    /** A generation that outgrows the whole KV cache alone ends with an error that says so, and the next one runs. */
    @Test
    void aGenerationThatOutgrowsTheKvCacheAloneEndsWithAnError() throws InterruptedException {
        start(new BoundedKvEngine(4), 1, 4, 5, 6);
        scheduler.submit(new GenerationRequest("long", prompt("The"), greedy(40)));
        String error = null;
        for (GenerationEvent event; error == null; ) {
            event = events.poll(60, TimeUnit.SECONDS);
            assertNotNull(event, "no event within 60 s");
            if (event instanceof GenerationEvent.Finish finish) {
                assertEquals(FinishReason.ERROR, finish.reason());
                assertEquals(16 - prompt("The").length + 1, finish.completionTokens(), "one per position the cache holds, and the last");
                error = finish.error();
            }
        }
        assertTrue(error.contains("KV cache is full with this generation alone"), error);
        scheduler.submit(new GenerationRequest("next", prompt("The"), greedy(3)));
        Map<String, FinishReason> reasons = new HashMap<>();
        assertEquals(3, collect(List.of("next"), reasons).get("next").size());
    }

    @Test
    void aFullQueueRefusesAtOnce() throws InterruptedException {
        start(1, 1, 64);
        scheduler.submit(new GenerationRequest("running", prompt("The"), greedy(500)));
        assertTrue(events.poll(60, TimeUnit.SECONDS) instanceof GenerationEvent.Token);
        assertEquals(Admission.ACCEPTED, scheduler.submit(new GenerationRequest("waiting", prompt("The"), greedy(1))));
        assertEquals(Admission.QUEUE_FULL, scheduler.submit(new GenerationRequest("refused", prompt("The"), greedy(1))));
        scheduler.drain();
        assertEquals(Admission.SHUTTING_DOWN, scheduler.submit(new GenerationRequest("late", prompt("The"), greedy(1))));
    }
}
