package io.dejavu.hub;

import java.io.IOException;
import java.net.URI;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import java.util.Set;
import java.util.function.Function;

/**
 * Where and how to reach the Hugging Face hub, read from the same environment variables as the Python
 * huggingface_hub client, so that both share one cache.
 *
 * @param cache    the hub cache: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub
 * @param endpoint HF_ENDPOINT, else https://huggingface.co
 * @param token    HF_TOKEN, else the token file huggingface-cli login writes (HF_HOME/token); null when neither
 * @param offline  HF_HUB_OFFLINE set to 1/true/yes/on: never touch the network
 */
public record HubSettings(Path cache, URI endpoint, String token, boolean offline) {
    private static final Set<String> TRUE = Set.of("1", "true", "yes", "on");

    public static HubSettings fromEnvironment() {
        return fromEnvironment(System::getenv, Path.of(System.getProperty("user.home")));
    }

    /** Settings from {@code env} (a variable name to its value or null); {@code home} stands for ~. */
    public static HubSettings fromEnvironment(Function<String, String> env, Path home) {
        Path hfHome = nonBlank(env.apply("HF_HOME")) != null ? Path.of(env.apply("HF_HOME"))
                : home.resolve(".cache").resolve("huggingface");
        Path cache = nonBlank(env.apply("HF_HUB_CACHE")) != null ? Path.of(env.apply("HF_HUB_CACHE")) : hfHome.resolve("hub");
        String endpoint = nonBlank(env.apply("HF_ENDPOINT")) != null ? env.apply("HF_ENDPOINT") : "https://huggingface.co";
        String token = nonBlank(env.apply("HF_TOKEN"));
        if (token == null) token = readToken(hfHome.resolve("token"));
        String offline = env.apply("HF_HUB_OFFLINE");
        return new HubSettings(cache, URI.create(endpoint.replaceAll("/+$", "")), token,
                offline != null && TRUE.contains(offline.trim().toLowerCase(Locale.ROOT)));
    }

    private static String readToken(Path file) {
        try {
            return Files.isRegularFile(file) ? nonBlank(Files.readString(file)) : null;
        } catch (IOException e) {
            return null;
        }
    }

    private static String nonBlank(String s) {
        return s == null || s.isBlank() ? null : s.strip();
    }
}
