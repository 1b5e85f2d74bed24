package io.dejavu.cli;

import io.dejavu.engine.Engine;
import io.dejavu.engine.EngineFactory;
import io.dejavu.generation.Generation;
import io.dejavu.generation.GenerationParams;
import io.dejavu.generation.Generator;
import io.dejavu.generation.Prompts;
import io.dejavu.model.OptModel;
import io.dejavu.tokenizer.Tokenizer;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.concurrent.Callable;

/** Streams a continuation of a prompt to stdout as it is produced. */
@Command(name = "generate", mixinStandardHelpOptions = true,
        description = "Generate a continuation of a prompt, streamed to stdout as it is produced.")
public final class GenerateCommand implements Callable<Integer> {
    @Mixin
    ModelOption model;
    @Mixin
    SamplingOptions sampling;
    @Spec
    CommandSpec spec;
    @Option(names = "--backend", paramLabel = "cpu|cuda|auto",
            description = "Engine: cpu, cuda, or auto (cuda when available, else cpu) (default: ${DEFAULT-VALUE}).")
    String backend = "cpu";
    @Option(names = "--prompt", required = true, paramLabel = "TEXT", description = "The prompt to continue.")
    String prompt;

    @Override
    public Integer call() {
        GenerationParams params = sampling.toParams();
        Path dir = model.directory();
        Tokenizer tokenizer = Tokenizer.load(dir);
        PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
        try (OptModel opt = OptModel.load(dir); Engine engine = EngineFactory.create(backend, opt)) {
            int[] promptIds = Prompts.withBos(tokenizer, opt.config(), prompt);
            long start = System.nanoTime();
            Generation generation = new Generator(engine, tokenizer).generate(promptIds, params, token -> {
                out.print(token.text());
                out.flush();
            });
            out.println();
            double seconds = (System.nanoTime() - start) / 1e9;
            spec.commandLine().getErr().printf("[%d prompt tokens, %d generated in %.2f s (%.1f tokens/s), finish: %s]%n",
                    promptIds.length, generation.generatedCount(), seconds, generation.generatedCount() / seconds,
                    generation.finishReason().wireName());
        }
        return 0;
    }
}
