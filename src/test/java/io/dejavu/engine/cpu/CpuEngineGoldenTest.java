package io.dejavu.engine.cpu;

import io.dejavu.engine.Sequence;
import io.dejavu.engine.Step;
import io.dejavu.model.OptModel;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import static io.dejavu.engine.cpu.GoldenReference.argmax;
import static io.dejavu.engine.cpu.GoldenReference.relativeL2;
import static io.dejavu.engine.cpu.GoldenReference.topK;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The CPU engine against transformers' OPTForCausalLM outputs for three layouts: opt-mini (trained, pre-LN),
 * opt-tiny-preln (random, real vocabulary) and opt-tiny-postln-proj (post-LN with project_in/project_out, as opt-350m).
 */
class CpuEngineGoldenTest {
    private static final Map<String, Fixture> FIXTURES = new HashMap<>();

    private record Fixture(OptModel model, CpuEngine engine, GoldenReference reference) {
    }

    private static synchronized Fixture fixture(String name) {
        return FIXTURES.computeIfAbsent(name, n -> {
            Path shared = GoldenReference.shared();
            Path dir = n.equals("opt-mini") ? shared.resolve("models/opt-mini") : shared.resolve("golden/" + n);
            OptModel model = OptModel.load(dir);
            return new Fixture(model, new CpuEngine(model),
                    GoldenReference.read(shared.resolve("golden/" + n + "-reference.json")));
        });
    }

    @AfterAll
    static void close() {
        for (Fixture f : FIXTURES.values()) {
            f.engine.close();
            f.model.close();
        }
        FIXTURES.clear();
    }

    @ParameterizedTest
    @ValueSource(strings = {"opt-mini", "opt-tiny-preln", "opt-tiny-postln-proj"})
    void prefillMatchesLastLogitsAndTop5AtEveryPosition(String name) {
        Fixture f = fixture(name);
        for (GoldenReference.Case c : f.reference.cases()) {
            try (Sequence s = f.engine.newSequence()) {
                float[][] logits = f.engine.forward(List.of(new Step(s, c.inputIds(), true))).getFirst();
                assertEquals(c.inputIds().length, logits.length);
                double error = relativeL2(logits[logits.length - 1], c.lastLogits());
                assertTrue(error < 1e-3, name + " '" + c.prompt() + "': relative L2 error " + error);
                for (int p = 0; p < logits.length; p++) {
                    assertArrayEquals(c.top5Ids()[p], topK(logits[p], 5), name + " '" + c.prompt() + "' position " + p);
                }
                assertEquals(c.inputIds().length, s.length());
            }
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"opt-mini", "opt-tiny-preln", "opt-tiny-postln-proj"})
    void greedyDecodeThroughKvCacheMatches(String name) {
        Fixture f = fixture(name);
        for (GoldenReference.Case c : f.reference.cases()) {
            try (Sequence s = f.engine.newSequence()) {
                float[] logits = f.engine.forward(List.of(Step.last(s, c.inputIds()))).getFirst()[0];
                int[] generated = new int[c.greedyIds().length];
                for (int i = 0; i < generated.length; i++) {
                    generated[i] = argmax(logits);
                    if (i + 1 < generated.length) logits = f.engine.forward(List.of(Step.last(s, generated[i]))).getFirst()[0];
                }
                assertArrayEquals(c.greedyIds(), generated, name + " '" + c.prompt() + "'");
                assertEquals(c.inputIds().length + generated.length - 1, s.length());
            }
        }
    }

    /**
     * One batch mixes a whole prompt, the first and second chunks of prompts and one-token decode steps; each step's
     * logits must equal those of its sequence run alone, before the batch and after it.
     */
    @ParameterizedTest
    @ValueSource(strings = {"opt-mini", "opt-tiny-postln-proj"})
    void batchOfDifferentLengthsMatchesRunningAlone(String name) {
        Fixture f = fixture(name);
        List<GoldenReference.Case> cases = f.reference.cases();
        int n = Math.min(4, cases.size());
        // Alone: each prompt in full, with all logits.
        List<float[][]> alone = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            try (Sequence s = f.engine.newSequence()) {
                alone.add(f.engine.forward(List.of(new Step(s, cases.get(i).inputIds(), true))).getFirst());
            }
        }
        List<Sequence> seqs = new ArrayList<>();
        for (int i = 0; i < n; i++) seqs.add(f.engine.newSequence());
        try {
            // Sequences i >= 1 first take all but their last token (i = 1 also with all logits); sequence 0 waits.
            List<Step> first = new ArrayList<>();
            for (int i = 1; i < n; i++) {
                int[] ids = cases.get(i).inputIds();
                first.add(new Step(seqs.get(i), Arrays.copyOf(ids, ids.length - 1), i == 1));
            }
            List<float[][]> out1 = f.engine.forward(first);
            float[][] chunk = out1.getFirst();
            for (int p = 0; p < chunk.length; p++) assertSame(alone.get(1)[p], chunk[p], name + " chunk position " + p);
            // Then sequence 0's whole prompt next to one-token steps of the others.
            List<Step> second = new ArrayList<>();
            second.add(Step.last(seqs.getFirst(), cases.getFirst().inputIds()));
            for (int i = 1; i < n; i++) {
                int[] ids = cases.get(i).inputIds();
                second.add(Step.last(seqs.get(i), ids[ids.length - 1]));
            }
            List<float[][]> out2 = f.engine.forward(second);
            for (int i = 0; i < n; i++) {
                float[][] a = alone.get(i);
                assertSame(a[a.length - 1], out2.get(i)[0], name + " sequence " + i);
                assertEquals(cases.get(i).inputIds().length, seqs.get(i).length());
            }
        } finally {
            seqs.forEach(Sequence::close);
        }
        // The engine keeps its working arrays from pass to pass: smaller passes after the batch must not see what
        // it left in them.
        for (int i = 0; i < n; i++) {
            try (Sequence s = f.engine.newSequence()) {
                float[][] again = f.engine.forward(List.of(new Step(s, cases.get(i).inputIds(), true))).getFirst();
                for (int p = 0; p < again.length; p++) assertSame(alone.get(i)[p], again[p], name + " again, position " + p);
            }
        }
    }

    private static void assertSame(float[] expected, float[] actual, String what) {
        double error = relativeL2(actual, expected);
        assertTrue(error < 1e-6, what + ": relative L2 difference " + error);
    }
}
