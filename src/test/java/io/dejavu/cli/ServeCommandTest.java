package io.dejavu.cli;

import io.dejavu.config.ServiceConfig;
import org.junit.jupiter.api.Test;
import picocli.CommandLine.Model.CommandSpec;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** `dejavu serve` settings: a flag for every key, and bad values stop it at start with a message, before it listens. */
class ServeCommandTest {
    @Test
    void everySettingHasAFlag() {
        CommandSpec serve = Main.commandLine().getSubcommands().get("serve").getCommandSpec();
        for (String key : ServiceConfig.keys()) {
            assertNotNull(serve.findOption(ServeCommand.flag(key)), "no flag " + ServeCommand.flag(key) + " for " + key);
        }
    }

    @Test
    void badSettingsStopItAtStartNamingTheKeyAndTheFlag() {
        assertRefused(CliRun.run("serve", "--port", "http"),
                "setting 'port' (from command-line flag --port) must be an integer, got \"http\"");
        assertRefused(CliRun.run("serve", "--max-batch-size", "0"),
                "setting 'max_batch_size' (from command-line flag --max-batch-size) must be in [1, 4096], got 0");
        assertRefused(CliRun.run("serve", "--webroot", "/no/such/webroot"),
                "setting 'webroot': /no/such/webroot is not a directory");
    }

    private static void assertRefused(CliRun run, String message) {
        assertEquals(2, run.exitCode(), run.err());
        assertTrue(run.err().contains(message), run.err());
        assertTrue(!run.err().contains("\tat "), run.err());
    }
}
