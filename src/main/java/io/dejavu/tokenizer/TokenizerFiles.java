package io.dejavu.tokenizer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.dejavu.model.ModelLoadException;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** Reads a tokenizer from the files Hugging Face saves next to a model. */
final class TokenizerFiles {
    private static final List<String> SPECIAL_ROLES =
            List.of("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token");
    private static final ObjectMapper JSON = new ObjectMapper();

    private TokenizerFiles() {
    }

    static Tokenizer load(Path modelDir) {
        if (!Files.isDirectory(modelDir)) {
            throw new ModelLoadException(modelDir, "not a directory; a tokenizer needs tokenizer.json or vocab.json + merges.txt");
        }
        Path tokenizerJson = modelDir.resolve("tokenizer.json");
        Map<String, Integer> vocab;
        Map<String, Integer> mergeRanks;
        Map<String, Integer> specialIds = new LinkedHashMap<>();
        String unknownToken = null;
        if (Files.exists(tokenizerJson)) {
            JsonNode root = readJson(tokenizerJson);
            checkSupported(tokenizerJson, root);
            JsonNode model = root.path("model");
            vocab = readVocab(tokenizerJson, model.get("vocab"), "model.vocab");
            mergeRanks = readMerges(tokenizerJson, model.get("merges"));
            unknownToken = model.path("unk_token").isTextual() ? model.get("unk_token").asText() : null;
            for (JsonNode added : root.path("added_tokens")) {
                if (!added.path("content").isTextual() || !added.path("id").canConvertToInt()) {
                    throw new ModelLoadException(tokenizerJson, "added_tokens entry without a text 'content' and an int 'id': " + added);
                }
                specialIds.put(added.get("content").asText(), added.get("id").asInt());
            }
        } else {
            Path vocabJson = modelDir.resolve("vocab.json");
            Path mergesTxt = modelDir.resolve("merges.txt");
            for (Path required : List.of(vocabJson, mergesTxt)) {
                if (!Files.exists(required)) {
                    throw new ModelLoadException(required, "missing: a tokenizer needs tokenizer.json or vocab.json + merges.txt");
                }
            }
            vocab = readVocab(vocabJson, readJson(vocabJson), "the top level");
            mergeRanks = readMergesTxt(mergesTxt);
        }
        Map<String, String> roles = new HashMap<>();
        for (String configName : List.of("special_tokens_map.json", "tokenizer_config.json")) {
            Path config = modelDir.resolve(configName);
            if (Files.exists(config)) readSpecialTokens(config, readJson(config), roles, specialIds, vocab);
        }
        if (unknownToken == null) unknownToken = roles.get("unk_token");
        return new Tokenizer(vocab, mergeRanks, specialIds, roles, unknownToken);
    }

    /** Rejects tokenizer.json features this byte-level BPE does not implement, rather than giving wrong ids. */
    private static void checkSupported(Path file, JsonNode root) {
        if (!root.isObject() || !root.path("model").isObject()) {
            throw new ModelLoadException(file, "expected a JSON object with a 'model' object");
        }
        String type = root.path("model").path("type").asText("BPE");
        if (!type.equals("BPE")) throw new ModelLoadException(file, "unsupported model type '" + type + "'; supported: BPE");
        if (!root.path("normalizer").isMissingNode() && !root.path("normalizer").isNull()) {
            throw new ModelLoadException(file, "unsupported normalizer " + root.get("normalizer") + "; supported: none");
        }
        JsonNode pre = root.path("pre_tokenizer");
        if (!pre.path("type").asText().equals("ByteLevel") || pre.path("add_prefix_space").asBoolean(false)
                || !pre.path("use_regex").asBoolean(true)) {
            throw new ModelLoadException(file, "unsupported pre_tokenizer " + pre
                    + "; supported: ByteLevel with add_prefix_space false and use_regex true (GPT-2/OPT)");
        }
    }

    private static JsonNode readJson(Path file) {
        try {
            JsonNode root = JSON.readTree(Files.readString(file));
            if (root == null || root.isMissingNode()) throw new ModelLoadException(file, "empty file, expected JSON");
            return root;
        } catch (NoSuchFileException e) {
            throw new ModelLoadException(file, "missing");
        } catch (IOException e) {
            throw new ModelLoadException(file, "not valid JSON: " + e.getMessage().lines().findFirst().orElse(""));
        }
    }

    private static Map<String, Integer> readVocab(Path file, JsonNode node, String where) {
        if (node == null || !node.isObject()) throw new ModelLoadException(file, "expected the vocabulary (token -> id) at " + where);
        Map<String, Integer> vocab = new HashMap<>(node.size() * 2);
        for (Map.Entry<String, JsonNode> entry : node.properties()) {
            if (!entry.getValue().canConvertToInt() || entry.getValue().asInt() < 0) {
                throw new ModelLoadException(file, "vocabulary entry '" + entry.getKey() + "' has id " + entry.getValue()
                        + ", expected a non-negative integer");
            }
            vocab.put(entry.getKey(), entry.getValue().asInt());
        }
        return vocab;
    }

    /** tokenizer.json merges: "left right" strings (tokenizers < 0.20) or [left, right] pairs. */
    private static Map<String, Integer> readMerges(Path file, JsonNode merges) {
        if (merges == null || !merges.isArray()) throw new ModelLoadException(file, "expected a 'model.merges' array");
        Map<String, Integer> ranks = new HashMap<>(merges.size() * 2);
        for (JsonNode merge : merges) {
            String pair;
            if (merge.isTextual()) pair = merge.asText();
            else if (merge.isArray() && merge.size() == 2 && merge.get(0).isTextual() && merge.get(1).isTextual()) {
                pair = merge.get(0).asText() + " " + merge.get(1).asText();
            } else {
                throw new ModelLoadException(file, "merge #" + ranks.size() + " is " + merge + ", expected \"a b\" or [\"a\", \"b\"]");
            }
            addMerge(file, "merge #" + ranks.size(), pair, ranks);
        }
        return ranks;
    }

    private static Map<String, Integer> readMergesTxt(Path file) {
        List<String> lines;
        try {
            lines = Files.readAllLines(file);
        } catch (IOException e) {
            throw new ModelLoadException(file, "cannot read: " + e.getMessage());
        }
        Map<String, Integer> ranks = new HashMap<>(lines.size() * 2);
        for (int i = 0; i < lines.size(); i++) {
            String line = lines.get(i);
            if (line.isBlank() || (i == 0 && line.startsWith("#version"))) continue;
            addMerge(file, "line " + (i + 1), line, ranks);
        }
        return ranks;
    }

    private static void addMerge(Path file, String where, String pair, Map<String, Integer> ranks) {
        String[] parts = pair.split(" ");
        if (parts.length != 2 || parts[0].isEmpty() || parts[1].isEmpty()) {
            throw new ModelLoadException(file, where + " is '" + pair + "', expected two tokens separated by one space");
        }
        // A repeated merge keeps its first (best) rank, as the reference implementations do.
        ranks.putIfAbsent(pair, ranks.size());
    }

    /**
     * Special tokens named by tokenizer_config.json / special_tokens_map.json. As in transformers, one missing from
     * the vocabulary is added after it.
     */
    private static void readSpecialTokens(Path file, JsonNode root, Map<String, String> roles,
                                          Map<String, Integer> specialIds, Map<String, Integer> vocab) {
        if (!root.isObject()) throw new ModelLoadException(file, "expected a JSON object");
        for (Map.Entry<String, JsonNode> entry : root.path("added_tokens_decoder").properties()) {
            String content = tokenText(file, "added_tokens_decoder." + entry.getKey(), entry.getValue());
            try {
                specialIds.putIfAbsent(content, Integer.parseInt(entry.getKey()));
            } catch (NumberFormatException e) {
                throw new ModelLoadException(file, "added_tokens_decoder key '" + entry.getKey() + "' is not an id");
            }
        }
        for (String role : SPECIAL_ROLES) {
            JsonNode value = root.get(role);
            if (value == null || value.isNull()) continue;
            String token = tokenText(file, role, value);
            roles.put(role, token);
            addSpecial(token, specialIds, vocab);
        }
        for (JsonNode value : root.path("additional_special_tokens")) {
            addSpecial(tokenText(file, "additional_special_tokens", value), specialIds, vocab);
        }
    }

    private static void addSpecial(String token, Map<String, Integer> specialIds, Map<String, Integer> vocab) {
        if (specialIds.containsKey(token)) return;
        Integer id = vocab.get(token);
        if (id == null) {
            int next = 0;
            for (int used : vocab.values()) next = Math.max(next, used + 1);
            for (int used : specialIds.values()) next = Math.max(next, used + 1);
            id = next;
        }
        specialIds.put(token, id);
    }

    /** A special token is written as its text or as an AddedToken object with a 'content' field. */
    private static String tokenText(Path file, String key, JsonNode value) {
        if (value.isTextual()) return value.asText();
        if (value.path("content").isTextual()) return value.get("content").asText();
        throw new ModelLoadException(file, "'" + key + "' is " + value + ", expected a token text or {\"content\": ...}");
    }
}
