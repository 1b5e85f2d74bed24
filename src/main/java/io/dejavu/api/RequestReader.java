package io.dejavu.api;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.dejavu.generation.GenerationParams;
import io.dejavu.generation.Prompts;
import io.dejavu.model.OptConfig;
import io.dejavu.sampling.SamplingParams;
import io.dejavu.tokenizer.Tokenizer;

import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.function.BooleanSupplier;

/**
 * Reads a generation request's JSON into the prompt's token ids and the generation parameters, checking every
 * parameter: an unknown one, a wrong type or a value out of range is refused with a 400 naming it.
 */
final class RequestReader {
    /** OpenAI's default max_tokens for /v1/completions; chat defaults to the server's max_output_tokens. */
    static final int COMPLETIONS_DEFAULT_MAX_TOKENS = 16;
    private static final ObjectMapper JSON = new ObjectMapper()
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS)
            .enable(DeserializationFeature.USE_BIG_DECIMAL_FOR_FLOATS);

    private static final Set<String> COMMON = Set.of("model", "max_tokens", "temperature", "top_p", "top_k", "min_p",
            "presence_penalty", "frequency_penalty", "repetition_penalty", "stop", "seed", "n", "logprobs", "user", "sparse");
    private static final Set<String> HTTP = Set.of("stream", "stream_options");
    private static final Set<String> COMPLETIONS = Set.of("prompt");
    private static final Set<String> CHAT = Set.of("messages", "max_completion_tokens", "top_logprobs");
    private static final Set<String> WEBSOCKET = Set.of("type", "id", "prompt", "messages", "top_logprobs");

    private final Tokenizer tokenizer;
    private final OptConfig modelConfig;
    private final String modelName;
    private final int maxPromptTokens;
    private final int maxOutputTokens;
    private final BooleanSupplier sparseAvailable;
    private final boolean sparseDefault;

    /**
     * @param sparseAvailable whether the engine has sparsity predictors (it may still be loading)
     * @param sparseDefault   requests that do not set "sparse" run sparse, when predictors are there
     */
    RequestReader(Tokenizer tokenizer, OptConfig modelConfig, String modelName, int maxPromptTokens,
                  int maxOutputTokens, BooleanSupplier sparseAvailable, boolean sparseDefault) {
        this.tokenizer = tokenizer;
        this.modelConfig = modelConfig;
        this.modelName = modelName;
        // The prompt must leave room for at least one generated token.
        this.maxPromptTokens = Math.min(maxPromptTokens, modelConfig.maxPositionEmbeddings() - 1);
        this.maxOutputTokens = maxOutputTokens;
        this.sparseAvailable = sparseAvailable;
        this.sparseDefault = sparseDefault;
    }

    /**
     * A checked request.
     *
     * @param promptIds    the prompt's token ids with OPT's leading id
     * @param stream       answer with Server-Sent Events
     * @param includeUsage with stream, send a last chunk with the usage counts (stream_options.include_usage)
     * @param sparse       decode with contextual sparsity
     */
    record ApiRequest(Endpoint endpoint, int[] promptIds, GenerationParams params, boolean stream,
                      boolean includeUsage, boolean sparse) {
    }

    /** Parses a request body (null when the request had none) or WebSocket message; a 400 when it is not one JSON object. */
    static JsonNode parse(String text) {
        if (text == null || text.isBlank()) {
            throw new ApiException(400, "invalid_request_error", null, "invalid_json",
                    "the request body is empty; send a JSON object");
        }
        try {
            JsonNode node = JSON.readTree(text);
            if (node == null || !node.isObject()) {
                throw new ApiException(400, "invalid_request_error", null, "invalid_json",
                        "the request body must be a JSON object");
            }
            return node;
        } catch (JsonProcessingException e) {
            throw new ApiException(400, "invalid_request_error", null, "invalid_json",
                    "the request body is not valid JSON: " + e.getOriginalMessage());
        }
    }

    ApiRequest read(JsonNode body, Endpoint endpoint) {
        checkKnown(body, endpoint);
        Fields f = new Fields(body);
        String model = f.string("model");
        if (model != null && !model.equals(modelName)) {
            throw new ApiException(404, "invalid_request_error", "model", "model_not_found",
                    "the model '" + model + "' does not exist; this server serves '" + modelName + "'");
        }
        Long n = f.integer("n");
        if (n != null && n != 1) throw ApiException.invalid("n", "only n = 1 is supported, got " + n);
        f.string("user");
        boolean sparse = sparse(f.bool("sparse"));

        List<String> stop = new ArrayList<>(f.stop());
        String prompt;
        boolean chat;
        if (endpoint == Endpoint.WEBSOCKET) {
            chat = body.hasNonNull("messages");
            if (chat == body.hasNonNull("prompt")) {
                throw ApiException.invalid("prompt", "give either prompt or messages, not " + (chat ? "both" : "neither"));
            }
        } else {
            chat = endpoint == Endpoint.CHAT;
        }
        prompt = chat ? chatPrompt(f) : completionPrompt(f);
        if (chat) {
            int room = GenerationParams.MAX_STOP_SEQUENCES - ChatTemplate.STOPS.size();
            if (stop.size() > room) {
                throw ApiException.invalid("stop", "chat requests take at most " + room
                        + " stop sequences (the chat template adds " + ChatTemplate.STOPS.size() + "), got " + stop.size());
            }
            stop.addAll(ChatTemplate.STOPS);
        }

        int maxTokens = maxTokens(f, chat);
        boolean logprobs;
        int topLogprobs;
        if (endpoint == Endpoint.COMPLETIONS) {
            Long count = f.integer("logprobs");
            logprobs = count != null;
            topLogprobs = count == null ? 0 : (int) range("logprobs", count, 0, GenerationParams.MAX_TOP_LOGPROBS);
        } else {
            Boolean wanted = f.bool("logprobs");
            logprobs = wanted != null && wanted;
            Long top = f.integer("top_logprobs");
            topLogprobs = top == null ? 0 : (int) range("top_logprobs", top, 0, GenerationParams.MAX_TOP_LOGPROBS);
        }

        SamplingParams defaults = SamplingParams.defaults();
        Long topK = f.integer("top_k");
        GenerationParams params;
        try {
            SamplingParams sampling = new SamplingParams(
                    f.number("temperature", defaults.temperature()),
                    f.number("top_p", defaults.topP()),
                    topK == null ? defaults.topK() : (int) range("top_k", topK, 0, Integer.MAX_VALUE),
                    f.number("min_p", defaults.minP()),
                    f.number("repetition_penalty", defaults.repetitionPenalty()),
                    f.number("presence_penalty", defaults.presencePenalty()),
                    f.number("frequency_penalty", defaults.frequencyPenalty()),
                    f.integer("seed"));
            params = new GenerationParams(maxTokens, stop, sampling, logprobs, topLogprobs);
        } catch (IllegalArgumentException e) {
            // The parameter records name the parameter first: "top_p = 1.5 is out of range ...".
            String message = e.getMessage();
            int end = message.indexOf(' ');
            String param = end > 0 && body.has(message.substring(0, end)) ? message.substring(0, end) : null;
            throw ApiException.invalid(param, message);
        }

        boolean stream = false;
        boolean includeUsage = false;
        if (endpoint != Endpoint.WEBSOCKET) {
            Boolean s = f.bool("stream");
            stream = s != null && s;
            JsonNode options = body.get("stream_options");
            if (options != null && !options.isNull()) {
                if (!options.isObject()) throw ApiException.invalid("stream_options", "stream_options must be an object");
                for (var field : options.properties()) {
                    if (!field.getKey().equals("include_usage")) {
                        throw ApiException.invalid("stream_options." + field.getKey(),
                                "unknown stream option '" + field.getKey() + "'");
                    }
                    if (!field.getValue().isBoolean()) {
                        throw ApiException.invalid("stream_options.include_usage", "include_usage must be a boolean");
                    }
                    includeUsage = field.getValue().asBoolean();
                }
                if (!stream) throw ApiException.invalid("stream_options", "stream_options needs stream = true");
            }
        }
        return new ApiRequest(endpoint, encode(prompt, chat ? "messages" : "prompt"), params, stream, includeUsage,
                sparse);
    }

    /** The request's "sparse" switch, else the server's default; asking for sparsity without predictors is a 400. */
    private boolean sparse(Boolean asked) {
        boolean available = sparseAvailable.getAsBoolean();
        if (asked == null) return sparseDefault && available;
        if (asked && !available) {
            throw new ApiException(400, "invalid_request_error", "sparse", "sparsity_unavailable",
                    "sparse = true, but this server has no sparsity predictors loaded (calibrate them with "
                            + "`dejavu calibrate`, or see the 'sparsity' setting)");
        }
        return asked;
    }

    private void checkKnown(JsonNode body, Endpoint endpoint) {
        for (var field : body.properties()) {
            String name = field.getKey();
            boolean known = COMMON.contains(name) || switch (endpoint) {
                case COMPLETIONS -> COMPLETIONS.contains(name) || HTTP.contains(name);
                case CHAT -> CHAT.contains(name) || HTTP.contains(name);
                case WEBSOCKET -> WEBSOCKET.contains(name);
            };
            if (!known) {
                throw new ApiException(400, "invalid_request_error", name, "unknown_parameter",
                        "unknown parameter '" + name + "'");
            }
        }
    }

    private int maxTokens(Fields f, boolean chat) {
        Long value = f.integer("max_tokens");
        String param = "max_tokens";
        Long completionTokens = f.integer("max_completion_tokens");
        if (completionTokens != null) {
            if (value != null) throw ApiException.invalid("max_tokens", "give max_tokens or max_completion_tokens, not both");
            value = completionTokens;
            param = "max_completion_tokens";
        }
        if (value == null) return chat ? maxOutputTokens : Math.min(COMPLETIONS_DEFAULT_MAX_TOKENS, maxOutputTokens);
        return (int) range(param, value, 1, maxOutputTokens);
    }

    private String completionPrompt(Fields f) {
        JsonNode node = f.body.get("prompt");
        if (node == null || node.isNull()) throw ApiException.invalid("prompt", "prompt is required");
        // Clients may send a one-element list of prompts; several prompts would need n > 1 choices.
        if (node.isArray() && node.size() == 1 && node.get(0).isTextual()) node = node.get(0);
        if (!node.isTextual()) throw ApiException.invalid("prompt", "prompt must be a string");
        if (node.asText().isEmpty()) throw ApiException.invalid("prompt", "prompt is empty");
        return node.asText();
    }

    private static String chatPrompt(Fields f) {
        JsonNode node = f.body.get("messages");
        if (node == null || node.isNull()) throw ApiException.invalid("messages", "messages is required");
        if (!node.isArray() || node.isEmpty()) throw ApiException.invalid("messages", "messages must be a non-empty array");
        List<ChatTemplate.Message> messages = new ArrayList<>();
        for (int i = 0; i < node.size(); i++) {
            String at = "messages[" + i + "]";
            JsonNode message = node.get(i);
            if (!message.isObject()) throw ApiException.invalid(at, at + " must be an object");
            for (var field : message.properties()) {
                if (!Set.of("role", "content", "name").contains(field.getKey())) {
                    throw new ApiException(400, "invalid_request_error", at + "." + field.getKey(), "unknown_parameter",
                            "unknown field '" + field.getKey() + "' in " + at);
                }
            }
            JsonNode role = message.get("role");
            if (role == null || !role.isTextual() || !ChatTemplate.ROLES.contains(role.asText())) {
                throw ApiException.invalid(at + ".role", at + ".role must be one of " + ChatTemplate.ROLES);
            }
            messages.add(new ChatTemplate.Message(role.asText(), content(message.get("content"), at + ".content")));
        }
        return ChatTemplate.render(messages);
    }

    /** A message's content: a string, or an array of {"type": "text", "text": ...} parts. */
    private static String content(JsonNode node, String at) {
        if (node != null && node.isTextual()) return node.asText();
        if (node != null && node.isArray()) {
            StringBuilder text = new StringBuilder();
            for (JsonNode part : node) {
                if (!part.isObject() || !"text".equals(part.path("type").asText()) || !part.path("text").isTextual()) {
                    throw ApiException.invalid(at, at + " parts must be {\"type\": \"text\", \"text\": ...}");
                }
                text.append(part.get("text").asText());
            }
            return text.toString();
        }
        throw ApiException.invalid(at, at + " must be a string or an array of text parts");
    }

    private int[] encode(String text, String param) {
        int[] ids = Prompts.withBos(tokenizer, modelConfig, text);
        if (ids.length > maxPromptTokens) {
            throw new ApiException(400, "invalid_request_error", param, "context_length_exceeded",
                    "the prompt has " + ids.length + " tokens; at most " + maxPromptTokens
                            + " are accepted (the model's context is " + modelConfig.maxPositionEmbeddings() + ")");
        }
        return ids;
    }

    private static long range(String param, long value, long min, long max) {
        if (value < min || value > max) {
            throw ApiException.invalid(param, param + " = " + value + " is out of range: must be [" + min + ", " + max + "]");
        }
        return value;
    }

    /** Typed reads of optional fields; JSON null counts as absent, as OpenAI's API treats it. */
    private record Fields(JsonNode body) {
        String string(String name) {
            JsonNode node = body.get(name);
            if (node == null || node.isNull()) return null;
            if (!node.isTextual()) throw ApiException.invalid(name, name + " must be a string");
            return node.asText();
        }

        Long integer(String name) {
            JsonNode node = body.get(name);
            if (node == null || node.isNull()) return null;
            if (!node.isIntegralNumber() || !node.canConvertToLong()) {
                throw ApiException.invalid(name, name + " must be an integer, got " + node);
            }
            return node.asLong();
        }

        double number(String name, double absent) {
            JsonNode node = body.get(name);
            if (node == null || node.isNull()) return absent;
            if (!node.isNumber()) throw ApiException.invalid(name, name + " must be a number, got " + node);
            return node.asDouble();
        }

        Boolean bool(String name) {
            JsonNode node = body.get(name);
            if (node == null || node.isNull()) return null;
            if (!node.isBoolean()) throw ApiException.invalid(name, name + " must be a boolean, got " + node);
            return node.asBoolean();
        }

        /** stop: a string or an array of strings. */
        List<String> stop() {
            JsonNode node = body.get("stop");
            if (node == null || node.isNull()) return List.of();
            if (node.isTextual()) return List.of(node.asText());
            if (!node.isArray()) throw ApiException.invalid("stop", "stop must be a string or an array of strings");
            List<String> stops = new ArrayList<>();
            for (JsonNode item : node) {
                if (!item.isTextual()) throw ApiException.invalid("stop", "stop must be a string or an array of strings");
                stops.add(item.asText());
            }
            return stops;
        }
    }
}
