package io.dejavu.cli;

import io.dejavu.model.ModelLoadException;
import picocli.CommandLine;
import picocli.CommandLine.Command;

import java.io.UncheckedIOException;

/** The dejavu command line: one subcommand per task. */
@Command(name = "dejavu", mixinStandardHelpOptions = true, version = "dejavu-serve 0.1.0",
        description = "Serve OPT language models with Deja Vu contextual sparsity.",
        subcommands = {ServeCommand.class, GenerateCommand.class, EvalCommand.class, CalibrateCommand.class,
                BenchCommand.class,
                CommandLine.HelpCommand.class})
public final class Main {
    public static void main(String[] args) {
        System.exit(commandLine().execute(args));
    }

    static CommandLine commandLine() {
        CommandLine cli = new CommandLine(new Main());
        cli.setExecutionExceptionHandler((e, commandLine, parseResult) -> {
            if (!isUserError(e)) throw e;
            // Bad input is the user's to fix: say what is wrong, without a stack trace.
            commandLine.getErr().println("dejavu " + commandLine.getCommandName() + ": " + e.getMessage());
            return 2;
        });
        return cli;
    }

    private static boolean isUserError(Exception e) {
        return e instanceof ModelLoadException || e instanceof IllegalArgumentException
                || e instanceof UncheckedIOException || e instanceof IllegalStateException;
    }
}
