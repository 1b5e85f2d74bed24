package io.dejavu.config;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.TextNode;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * The server's settings. Each key comes, by rising precedence, from its default, the JSON config file
 * (conf/config.json), the environment variable DEJAVU_&lt;KEY&gt; (upper case) and the command line. Every value is
 * checked here, at start, so that a bad setting stops the server with a message naming the key and where it came from.
 *
 * @param model                the OPT model directory (Hugging Face layout)
 * @param backend              cpu, cuda, or auto (cuda when available, else cpu)
 * @param cpuThreads           the CPU engine's threads, the engine thread included; 0 = one per core
 * @param kvCacheMib           the CUDA engine's KV cache pool in MiB; 0 = 90% of the GPU memory the weights leave
 * @param httpInstances        HTTP/WebSocket verticle instances; 0 = one per core
 * @param maxBatchSize         most sequences in one engine forward pass
 * @param queueLimit           most requests waiting for a batch slot; beyond it requests are rejected at once
 * @param maxPromptTokens      longest prompt accepted, in tokens (OPT's leading token included)
 * @param maxOutputTokens      largest max_tokens accepted; also the default for chat
 * @param prefillChunkTokens   most prompt tokens prefilled in one engine step, so a long prompt does not stall the
 *                             tokens of the running sequences
 * @param maxNumBatchedTokens  most tokens in one engine step, decode rows and prompt chunks together (vLLM's name):
 *                             prompt chunks get what the decode rows leave, so a step of a full batch grows by at
 *                             most this less max_batch_size tokens; at least maxBatchSize, so prompts always advance
 * @param sparsity             where the contextual-sparsity predictors come from: "auto" (MODEL_DIR/dejavu when it
 *                             holds them, else none), "dense" (none), or a predictors directory (must load)
 * @param sparseDefault        whether requests that do not say "sparse" run sparse (when predictors are loaded)
 * @param sparseMlpK           MLP neurons kept per token: empty = the predictors file's rule; one value = every
 *                             layer; else one per layer
 * @param sparseHeadsKeep      attention heads kept per token, as sparseMlpK
 * @param apiKeys              accepted Bearer keys; empty = no authentication
 * @param corsOrigins          origins allowed by CORS; "*" = any; empty = no CORS headers
 * @param maxBodyBytes         largest HTTP request body
 * @param maxFrameBytes        largest WebSocket message
 * @param webroot              folder served as static files at /
 * @param shutdownGraceSeconds on shutdown, how long in-flight generations may run before they are cancelled
 */
public record ServiceConfig(Path model, String backend, int cpuThreads, int kvCacheMib, String host, int port,
                            int httpInstances, int maxBatchSize, int queueLimit, int maxPromptTokens,
                            int maxOutputTokens, int prefillChunkTokens, int maxNumBatchedTokens, String sparsity,
                            boolean sparseDefault,
                            List<Integer> sparseMlpK, List<Integer> sparseHeadsKeep, List<String> apiKeys,
                            List<String> corsOrigins, int maxBodyBytes, int maxFrameBytes, Path webroot,
                            int shutdownGraceSeconds) {

    /** These settings with the model, webroot and sparsity paths resolved as the server finds them. */
    public ServiceConfig withPaths(Path model, Path webroot, String sparsity) {
        return new ServiceConfig(model, backend, cpuThreads, kvCacheMib, host, port, httpInstances, maxBatchSize,
                queueLimit, maxPromptTokens, maxOutputTokens, prefillChunkTokens, maxNumBatchedTokens, sparsity,
                sparseDefault, sparseMlpK, sparseHeadsKeep, apiKeys, corsOrigins, maxBodyBytes, maxFrameBytes, webroot,
                shutdownGraceSeconds);
    }

    /** Where the server looks for its config file when none is given, relative to the working directory. */
    public static final Path DEFAULT_FILE = Path.of("conf", "config.json");
    public static final String ENV_PREFIX = "DEJAVU_";
    public static final List<String> BACKENDS = List.of("cpu", "cuda", "auto");
    /** The sparsity setting that looks for predictors in the model directory. */
    public static final String SPARSITY_AUTO = "auto";
    /** The sparsity setting that loads no predictors. */
    public static final String SPARSITY_DENSE = "dense";

    /** Every key with its default, as the JSON file spells them. */
    private static final Map<String, Object> DEFAULTS = defaults();

    private static Map<String, Object> defaults() {
        Map<String, Object> d = new LinkedHashMap<>();
        d.put("model", "models/opt-demo");
        d.put("backend", "auto");
        d.put("cpu_threads", 0);
        d.put("kv_cache_mib", 0);
        d.put("host", "127.0.0.1");
        d.put("port", 8080);
        d.put("http_instances", 0);
        d.put("max_batch_size", 16);
        d.put("queue_limit", 64);
        d.put("max_prompt_tokens", 768);
        d.put("max_output_tokens", 256);
        d.put("prefill_chunk_tokens", 128);
        d.put("max_num_batched_tokens", 0);
        d.put("sparsity", "auto");
        d.put("sparse_default", false);
        d.put("sparse_mlp_k", List.of());
        d.put("sparse_heads_keep", List.of());
        d.put("api_keys", List.of());
        d.put("cors_origins", List.of());
        d.put("max_body_bytes", 256 * 1024);
        d.put("max_frame_bytes", 64 * 1024);
        d.put("webroot", "webroot");
        d.put("shutdown_grace_seconds", 10);
        return d;
    }

    /** The keys a config file, environment variable or flag may set. */
    public static List<String> keys() {
        return List.copyOf(DEFAULTS.keySet());
    }

    /** The environment variable that overrides a key: DEJAVU_MAX_BATCH_SIZE for max_batch_size. */
    public static String envName(String key) {
        return ENV_PREFIX + key.toUpperCase(Locale.ROOT);
    }

    /**
     * Reads the settings.
     *
     * @param file      the JSON config file; null for none (defaults, environment and flags only)
     * @param env       the environment (System.getenv())
     * @param overrides values from the command line, by key
     * @throws ConfigException naming the key, its source and the problem
     */
    public static ServiceConfig load(Path file, Map<String, String> env, Map<String, String> overrides) {
        Values values = new Values();
        DEFAULTS.forEach((key, value) -> values.put(key, new ObjectMapper().valueToTree(value), "default"));
        if (file != null) values.readFile(file);
        for (String key : DEFAULTS.keySet()) {
            String value = env.get(envName(key));
            if (value != null) values.put(key, TextNode.valueOf(value), "environment variable " + envName(key));
        }
        overrides.forEach((key, value) -> {
            if (!DEFAULTS.containsKey(key)) throw new ConfigException("unknown setting '" + key + "' on the command line");
            values.put(key, TextNode.valueOf(value), "command-line flag --" + key.replace('_', '-'));
        });
        return values.toConfig();
    }

    /** The raw values with where each came from, and their typed, checked reading. */
    private static final class Values {
        private final Map<String, JsonNode> raw = new LinkedHashMap<>();
        private final Map<String, String> origin = new LinkedHashMap<>();

        void put(String key, JsonNode value, String from) {
            raw.put(key, value);
            origin.put(key, from);
        }

        void readFile(Path file) {
            JsonNode root;
            try {
                root = new ObjectMapper().readTree(Files.readString(file));
            } catch (NoSuchFileException e) {
                throw new ConfigException(file + ": no such config file");
            } catch (JsonProcessingException e) {
                throw new ConfigException(file + ": not valid JSON: " + e.getOriginalMessage());
            } catch (IOException e) {
                throw new ConfigException(file + ": cannot read: " + e.getMessage());
            }
            if (root == null || !root.isObject()) throw new ConfigException(file + ": must hold one JSON object");
            for (var field : root.properties()) {
                if (!DEFAULTS.containsKey(field.getKey())) {
                    throw new ConfigException(file + ": unknown key '" + field.getKey() + "' (known keys: "
                            + String.join(", ", DEFAULTS.keySet()) + ")");
                }
                put(field.getKey(), field.getValue(), file.toString());
            }
        }

        ServiceConfig toConfig() {
            String backend = string("backend").toLowerCase(Locale.ROOT);
            if (!BACKENDS.contains(backend)) throw bad("backend", "must be one of " + BACKENDS);
            String sparsity = string("sparsity");
            int maxPromptTokens = integer("max_prompt_tokens", 2, Integer.MAX_VALUE);
            int maxBatchSize = integer("max_batch_size", 1, 4096);
            int prefillChunkTokens = integer("prefill_chunk_tokens", 1, Integer.MAX_VALUE);
            int maxNumBatchedTokens = integer("max_num_batched_tokens", 0, Integer.MAX_VALUE);
            if (maxNumBatchedTokens == 0) {
                maxNumBatchedTokens = (int) Math.min(Integer.MAX_VALUE, (long) maxBatchSize + prefillChunkTokens);
            } else if (maxNumBatchedTokens < maxBatchSize) {
                throw bad("max_num_batched_tokens", "must be 0 (max_batch_size + prefill_chunk_tokens) or at least "
                        + "max_batch_size (" + maxBatchSize + "), so that a prompt advances beside a full batch; got "
                        + maxNumBatchedTokens);
            }
            return new ServiceConfig(Path.of(string("model")), backend, integer("cpu_threads", 0, 4096),
                    integer("kv_cache_mib", 0, Integer.MAX_VALUE), string("host"), integer("port", 0, 65535),
                    integer("http_instances", 0, 1024), maxBatchSize,
                    integer("queue_limit", 0, 1_000_000), maxPromptTokens,
                    integer("max_output_tokens", 1, Integer.MAX_VALUE), prefillChunkTokens, maxNumBatchedTokens,
                    sparsity, bool("sparse_default"),
                    integers("sparse_mlp_k"), integers("sparse_heads_keep"), list("api_keys"),
                    list("cors_origins"), integer("max_body_bytes", 1024, Integer.MAX_VALUE),
                    integer("max_frame_bytes", 1024, Integer.MAX_VALUE), Path.of(string("webroot")),
                    integer("shutdown_grace_seconds", 0, 3600));
        }

        private String string(String key) {
            JsonNode node = raw.get(key);
            if (!node.isTextual() || node.asText().isBlank()) throw bad(key, "must be a non-empty string");
            return node.asText().strip();
        }

        private int integer(String key, int min, int max) {
            JsonNode node = raw.get(key);
            long value;
            if (node.isIntegralNumber() && node.canConvertToLong()) {
                value = node.asLong();
            } else if (node.isTextual()) {
                try {
                    value = Long.parseLong(node.asText().strip());
                } catch (NumberFormatException e) {
                    throw bad(key, "must be an integer, got \"" + node.asText() + "\"");
                }
            } else {
                throw bad(key, "must be an integer, got " + node);
            }
            if (value < min || value > max) {
                throw bad(key, "must be in [" + min + ", " + max + "], got " + value);
            }
            return (int) value;
        }

        /** A JSON boolean, or (from the environment and flags) "true" or "false". */
        private boolean bool(String key) {
            JsonNode node = raw.get(key);
            if (node.isBoolean()) return node.asBoolean();
            String text = node.isTextual() ? node.asText().strip().toLowerCase(Locale.ROOT) : "";
            if (text.equals("true") || text.equals("false")) return text.equals("true");
            throw bad(key, "must be true or false, got " + node);
        }

        /** Positive integers: a JSON array, or (from the environment and flags) a comma-separated string. */
        private List<Integer> integers(String key) {
            JsonNode node = raw.get(key);
            List<Integer> values = new ArrayList<>();
            if (node.isArray()) {
                for (JsonNode item : node) {
                    if (!item.isInt() || item.asInt() < 1) throw bad(key, "must hold positive integers, got " + item);
                    values.add(item.asInt());
                }
                return List.copyOf(values);
            }
            for (String item : list(key)) {
                try {
                    int value = Integer.parseInt(item);
                    if (value < 1) throw new NumberFormatException();
                    values.add(value);
                } catch (NumberFormatException e) {
                    throw bad(key, "must hold positive integers, got \"" + item + "\"");
                }
            }
            return List.copyOf(values);
        }

        /** A JSON array of strings, or (from the environment and flags) a comma-separated string. */
        private List<String> list(String key) {
            JsonNode node = raw.get(key);
            List<String> items = new ArrayList<>();
            if (node.isArray()) {
                for (JsonNode item : node) {
                    if (!item.isTextual() || item.asText().isBlank()) {
                        throw bad(key, "must hold non-empty strings, got " + item);
                    }
                    items.add(item.asText().strip());
                }
            } else if (node.isTextual()) {
                for (String item : node.asText().split(",")) {
                    if (!item.isBlank()) items.add(item.strip());
                }
            } else {
                throw bad(key, "must be an array of strings, got " + node);
            }
            return List.copyOf(items);
        }

        private ConfigException bad(String key, String problem) {
            return new ConfigException("setting '" + key + "' (from " + origin.get(key) + ") " + problem);
        }
    }
}
