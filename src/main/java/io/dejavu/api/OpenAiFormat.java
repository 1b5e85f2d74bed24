package io.dejavu.api;

import io.dejavu.generation.FinishReason;
import io.dejavu.sampling.TokenLogprob;
import io.dejavu.scheduler.GenerationEvent;
import io.dejavu.tokenizer.Tokenizer;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;

import java.nio.charset.StandardCharsets;
import java.util.List;

/** The JSON shapes of OpenAI's completions and chat completions answers, whole and streamed. */
final class OpenAiFormat {
    private final Tokenizer tokenizer;
    private final String modelName;

    OpenAiFormat(Tokenizer tokenizer, String modelName) {
        this.tokenizer = tokenizer;
        this.modelName = modelName;
    }

    /** The answer's identity, shared by all chunks of one stream. */
    record Identity(Endpoint endpoint, String id, long created) {
        static Identity of(Endpoint endpoint, String requestId) {
            String prefix = endpoint == Endpoint.CHAT ? "chatcmpl-" : "cmpl-";
            return new Identity(endpoint, prefix + requestId, System.currentTimeMillis() / 1000);
        }
    }

    static JsonObject usage(GenerationEvent.Finish finish) {
        return new JsonObject()
                .put("prompt_tokens", finish.promptTokens())
                .put("completion_tokens", finish.completionTokens())
                .put("total_tokens", finish.promptTokens() + finish.completionTokens());
    }

    /** A whole answer; tokens are given when logprobs were asked for, else null. */
    JsonObject whole(Identity identity, String text, GenerationEvent.Finish finish, List<GenerationEvent.Token> tokens) {
        JsonObject choice = new JsonObject().put("index", 0);
        if (identity.endpoint() == Endpoint.CHAT) {
            choice.put("message", new JsonObject().put("role", "assistant").put("content", text));
        } else {
            choice.put("text", text);
        }
        choice.put("logprobs", tokens == null ? null : logprobs(identity.endpoint(), tokens, 0))
                .put("finish_reason", finish.reason().wireName());
        return envelope(identity, false).put("choices", new JsonArray().add(choice)).put("usage", usage(finish));
    }

    /**
     * One streamed chunk: a text delta, or the last one with the finish reason.
     *
     * @param role       for chat, the first chunk names the assistant role
     * @param textOffset where this chunk's text starts in the whole answer (completions logprobs)
     */
    JsonObject chunk(Identity identity, String text, boolean role, FinishReason finish,
                     List<GenerationEvent.Token> tokens, int textOffset) {
        JsonObject choice = new JsonObject().put("index", 0);
        if (identity.endpoint() == Endpoint.CHAT) {
            JsonObject delta = new JsonObject();
            if (role) delta.put("role", "assistant");
            if (text != null) delta.put("content", text);
            choice.put("delta", delta);
        } else {
            choice.put("text", text == null ? "" : text);
        }
        choice.put("logprobs", tokens == null ? null : logprobs(identity.endpoint(), tokens, textOffset))
                .put("finish_reason", finish == null ? null : finish.wireName());
        return envelope(identity, true).put("choices", new JsonArray().add(choice));
    }

    /** The chunk stream_options.include_usage asks for: no choices, the usage counts. */
    JsonObject usageChunk(Identity identity, GenerationEvent.Finish finish) {
        return envelope(identity, true).put("choices", new JsonArray()).put("usage", usage(finish));
    }

    JsonObject models(long created) {
        return new JsonObject().put("object", "list").put("data", new JsonArray().add(new JsonObject()
                .put("id", modelName).put("object", "model").put("created", created).put("owned_by", "dejavu-serve")));
    }

    private JsonObject envelope(Identity identity, boolean chunk) {
        String object = identity.endpoint() == Endpoint.CHAT
                ? (chunk ? "chat.completion.chunk" : "chat.completion")
                : "text_completion";
        return new JsonObject().put("id", identity.id()).put("object", object).put("created", identity.created())
                .put("model", modelName);
    }

    /** Completions: {tokens, token_logprobs, top_logprobs, text_offset}; chat: {content: [{token, logprob, bytes, top_logprobs}]}. */
    JsonObject logprobs(Endpoint endpoint, List<GenerationEvent.Token> tokens, int textOffset) {
        if (endpoint == Endpoint.COMPLETIONS) {
            JsonArray strings = new JsonArray();
            JsonArray logprobs = new JsonArray();
            JsonArray top = new JsonArray();
            JsonArray offsets = new JsonArray();
            int offset = textOffset;
            for (GenerationEvent.Token token : tokens) {
                String text = tokenText(token.tokenId());
                strings.add(text);
                logprobs.add(token.logprob());
                JsonObject alternatives = new JsonObject();
                for (TokenLogprob alternative : token.topLogprobs()) {
                    alternatives.put(tokenText(alternative.token()), alternative.logprob());
                }
                top.add(token.topLogprobs().isEmpty() ? null : alternatives);
                offsets.add(offset);
                offset += text.length();
            }
            return new JsonObject().put("tokens", strings).put("token_logprobs", logprobs).put("top_logprobs", top)
                    .put("text_offset", offsets);
        }
        JsonArray content = new JsonArray();
        for (GenerationEvent.Token token : tokens) {
            JsonArray top = new JsonArray();
            for (TokenLogprob alternative : token.topLogprobs()) top.add(tokenLogprob(alternative.token(), alternative.logprob()));
            content.add(tokenLogprob(token.tokenId(), token.logprob()).put("top_logprobs", top));
        }
        return new JsonObject().put("content", content);
    }

    JsonObject tokenLogprob(int tokenId, double logprob) {
        String text = tokenText(tokenId);
        JsonArray bytes = new JsonArray();
        for (byte b : text.getBytes(StandardCharsets.UTF_8)) bytes.add(b & 0xff);
        return new JsonObject().put("token", text).put("logprob", logprob).put("bytes", bytes);
    }

    /** A token's own text; special tokens show as their text ("</s>"). */
    String tokenText(int tokenId) {
        return tokenizer.decode(new int[]{tokenId});
    }
}
