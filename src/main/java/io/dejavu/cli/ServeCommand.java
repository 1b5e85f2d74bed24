package io.dejavu.cli;

import io.dejavu.config.ConfigException;
import io.dejavu.config.ServiceConfig;
import io.dejavu.hub.ModelLocator;
import io.dejavu.model.ModelLoadException;
import io.dejavu.server.DejavuServer;
import io.dejavu.engine.EngineFactory;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Model.OptionSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.concurrent.CountDownLatch;

/**
 * bin/dejavu serve: the HTTP/WebSocket server. Settings come from conf/config.json, DEJAVU_* environment variables
 * and these flags, in rising precedence.
 */
@Command(name = "serve", mixinStandardHelpOptions = true,
        description = {"Serve an OPT model: OpenAI-compatible HTTP API, WebSocket streaming, /health, /metrics.",
                "Every setting of conf/config.json can also be given as DEJAVU_<KEY> (e.g. DEJAVU_MAX_BATCH_SIZE) "
                        + "or as a flag; flags win over the environment, which wins over the file."})
public final class ServeCommand implements Callable<Integer> {
    @Option(names = "--config", paramLabel = "FILE",
            description = "JSON config file (default: conf/config.json, in the working directory or the install)")
    Path configFile;

    @Option(names = "--model", paramLabel = "DIR", description = "OPT model directory (Hugging Face layout)")
    String model;
    @Option(names = "--backend", paramLabel = "cpu|cuda|auto", description = "engine backend; auto = cuda if available, else cpu")
    String backend;
    @Option(names = "--cpu-threads", paramLabel = "N", description = "the CPU engine's threads; 0 = one per core")
    String cpuThreads;
    @Option(names = "--kv-cache-mib", paramLabel = "N",
            description = "the CUDA engine's KV cache in MiB; 0 = 90% of the GPU memory the weights leave")
    String kvCacheMib;
    @Option(names = "--host", paramLabel = "ADDR", description = "address to listen on")
    String host;
    @Option(names = "--port", paramLabel = "N", description = "port to listen on")
    String port;
    @Option(names = "--http-instances", paramLabel = "N", description = "HTTP/WebSocket verticles; 0 = one per core")
    String httpInstances;
    @Option(names = "--max-batch-size", paramLabel = "N", description = "most sequences in one engine step")
    String maxBatchSize;
    @Option(names = "--queue-limit", paramLabel = "N", description = "most waiting requests; more are refused (429)")
    String queueLimit;
    @Option(names = "--max-prompt-tokens", paramLabel = "N", description = "longest prompt accepted, in tokens")
    String maxPromptTokens;
    @Option(names = "--max-output-tokens", paramLabel = "N", description = "largest max_tokens accepted")
    String maxOutputTokens;
    @Option(names = "--prefill-chunk-tokens", paramLabel = "N", description = "most prompt tokens prefilled per engine step")
    String prefillChunkTokens;
    @Option(names = "--max-num-batched-tokens", paramLabel = "N",
            description = "most tokens per engine step, decode rows and prompt chunks together; 0 = max batch size + "
                    + "prefill chunk")
    String maxNumBatchedTokens;
    @Option(names = "--sparsity", paramLabel = "auto|dense|DIR",
            description = "sparsity predictors: auto (MODEL_DIR/dejavu when present), dense (none) or a directory")
    String sparsity;
    @Option(names = "--sparse-default", paramLabel = "true|false",
            description = "run requests that do not set \"sparse\" sparse (when predictors are loaded)")
    String sparseDefault;
    @Option(names = "--sparse-mlp-k", paramLabel = "K[,K...]",
            description = "MLP neurons kept per token (one value or one per layer); default: the predictors' rule")
    String sparseMlpK;
    @Option(names = "--sparse-heads-keep", paramLabel = "N[,N...]",
            description = "attention heads kept per token (one value or one per layer); default: the predictors'")
    String sparseHeadsKeep;
    @Option(names = "--api-keys", paramLabel = "K1,K2", description = "accepted Bearer API keys; none = open")
    String apiKeys;
    @Option(names = "--cors-origins", paramLabel = "O1,O2", description = "origins allowed by CORS; * = any")
    String corsOrigins;
    @Option(names = "--max-body-bytes", paramLabel = "N", description = "largest HTTP request body")
    String maxBodyBytes;
    @Option(names = "--max-frame-bytes", paramLabel = "N", description = "largest WebSocket message")
    String maxFrameBytes;
    @Option(names = "--webroot", paramLabel = "DIR", description = "folder served as static files at /")
    String webroot;
    @Option(names = "--shutdown-grace-seconds", paramLabel = "N",
            description = "on shutdown, how long in-flight generations may finish before they are cancelled")
    String shutdownGraceSeconds;

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() throws InterruptedException {
        ServiceConfig config;
        String modelName;
        PrintWriter err = spec.commandLine().getErr();
        try {
            config = ServiceConfig.load(configFile(), System.getenv(), overrides());
            modelName = modelName(config.model());
            err.println("dejavu serve: backend " + EngineFactory.describe(config.backend()));
            config = resolvePaths(config);
        } catch (ConfigException | ModelLoadException | IllegalStateException e) {
            err.println("dejavu serve: " + e.getMessage());
            return 2;
        }
        DejavuServer server;
        try {
            server = DejavuServer.start(config, modelName);
        } catch (RuntimeException e) {
            err.println("dejavu serve: cannot start: " + e.getMessage());
            return 1;
        }
        CountDownLatch stopped = new CountDownLatch(1);
        // SIGTERM and Ctrl-C run the shutdown hooks: stop admitting, let in-flight requests finish, close sockets.
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            server.close();
            stopped.countDown();
        }, "dejavu-shutdown"));
        stopped.await();
        return 0;
    }

    /** The flags given, by the key they set: each key's flag is --KEY with dashes for underscores. */
    private Map<String, String> overrides() {
        Map<String, String> values = new LinkedHashMap<>();
        for (String key : ServiceConfig.keys()) {
            OptionSpec option = spec.findOption(flag(key));
            if (option != null && option.getValue() != null) values.put(key, option.getValue());
        }
        return values;
    }

    static String flag(String key) {
        return "--" + key.replace('_', '-');
    }

    /** The given file; else conf/config.json of the working directory, else of the installation (bin/dejavu's). */
    private Path configFile() {
        if (configFile != null) return configFile;
        for (Path dir : searchDirs()) {
            Path candidate = dir.resolve(ServiceConfig.DEFAULT_FILE);
            if (Files.exists(candidate)) return candidate;
        }
        return null;
    }

    /**
     * Relative model, webroot and predictors paths are found in the working directory, else in the installation; a model that
     * is neither is taken for a Hugging Face hub id (downloaded into the hub cache when missing).
     */
    private static ServiceConfig resolvePaths(ServiceConfig config) {
        Path model = locate(config.model());
        if (!Files.isDirectory(model)) model = ModelLocator.fromEnvironment().locate(config.model().toString());
        String sparsity = config.sparsity();
        boolean directory = !sparsity.equals(ServiceConfig.SPARSITY_AUTO) && !sparsity.equals(ServiceConfig.SPARSITY_DENSE);
        Path webroot = locate(config.webroot());
        if (!Files.isDirectory(webroot)) {
            throw new ConfigException("setting 'webroot': " + config.webroot() + " is not a directory (looked in the "
                    + "working directory" + (searchDirs().size() > 1 ? " and the installation" : "") + ")");
        }
        return config.withPaths(model, webroot, directory ? locate(Path.of(sparsity)).toString() : sparsity);
    }

    /** The id the API serves the model under: a hub id as given, else the directory's name. */
    private static String modelName(Path model) {
        Path local = locate(model);
        return Files.isDirectory(local) ? local.toAbsolutePath().normalize().getFileName().toString()
                : model.toString();
    }

    private static Path locate(Path path) {
        if (path.isAbsolute()) return path;
        for (Path dir : searchDirs()) {
            if (Files.exists(dir.resolve(path))) return dir.resolve(path);
        }
        return path;
    }

    private static List<Path> searchDirs() {
        String home = System.getProperty("dejavu.home");
        return home == null ? List.of(Path.of("")) : List.of(Path.of(""), Path.of(home));
    }
}
