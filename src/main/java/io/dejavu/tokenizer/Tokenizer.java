package io.dejavu.tokenizer;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HashMap;
import java.util.Map;
import java.util.OptionalInt;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;

/**
 * The byte-level BPE tokenizer of GPT-2 and OPT, matching Hugging Face tokenizers' ids.
 * Text is split around special tokens, pre-tokenized with GPT-2's regex, written as byte-level characters and
 * merged by rank. Immutable and thread-safe.
 */
public final class Tokenizer {
    /**
     * GPT-2's pre-tokenizer. Java's \s is ASCII-only, so Unicode white space is spelled out to match the
     * Rust/Python regex engines the reference tokenizers use.
     */
    private static final Pattern PRE_TOKENIZER = Pattern.compile(
            "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\p{IsWhite_Space}\\p{L}\\p{N}]+"
                    + "|\\p{IsWhite_Space}+(?!\\P{IsWhite_Space})|\\p{IsWhite_Space}+");

    /** Vocabulary entries in byte-level characters; null where an id has no token. */
    private final String[] tokens;
    private final Map<String, Integer> ids;
    /** Special tokens: matched verbatim in text before pre-tokenization and decoded to their content. */
    private final Map<String, Integer> specialIds;
    private final boolean[] special;
    /** Roles (bos_token, eos_token, ...) named by the tokenizer's config, to their token. */
    private final Map<String, String> specialRoles;
    private final Pattern specialPattern;
    private final BytePairEncoder encoder;

    Tokenizer(Map<String, Integer> vocab, Map<String, Integer> mergeRanks, Map<String, Integer> specialIds,
              Map<String, String> specialRoles, String unknownToken) {
        int size = 0;
        for (int id : vocab.values()) size = Math.max(size, id + 1);
        for (int id : specialIds.values()) size = Math.max(size, id + 1);
        this.tokens = new String[size];
        this.special = new boolean[size];
        vocab.forEach((token, id) -> tokens[id] = token);
        specialIds.forEach((token, id) -> {
            tokens[id] = token;
            special[id] = true;
        });
        this.ids = new HashMap<>(vocab);
        this.ids.putAll(specialIds);
        this.specialIds = Map.copyOf(specialIds);
        this.specialRoles = Map.copyOf(specialRoles);
        // Longest first, so that a special token containing another one wins.
        this.specialPattern = specialIds.isEmpty() ? null : Pattern.compile(specialIds.keySet().stream()
                .sorted(Comparator.comparingInt(String::length).reversed())
                .map(Pattern::quote)
                .collect(Collectors.joining("|")));
        Integer unknownId = unknownToken == null ? null : ids.get(unknownToken);
        this.encoder = new BytePairEncoder(Map.copyOf(vocab), mergeRanks, unknownId == null ? -1 : unknownId);
    }

    /**
     * Loads the tokenizer of a model directory: tokenizer.json when present (what Hugging Face's fast tokenizer
     * reads), else vocab.json + merges.txt, with special tokens from tokenizer_config.json and
     * special_tokens_map.json.
     *
     * @throws io.dejavu.model.ModelLoadException naming the file and the problem
     */
    public static Tokenizer load(Path modelDir) {
        return TokenizerFiles.load(modelDir);
    }

    /** The ids of the text, with no special tokens added; special token strings in the text become their id. */
    public int[] encode(String text) {
        IntList out = new IntList(Math.max(16, text.length() / 3));
        if (specialPattern == null) {
            encodeOrdinary(text, out);
            return out.toArray();
        }
        Matcher m = specialPattern.matcher(text);
        int start = 0;
        while (m.find()) {
            encodeOrdinary(text.substring(start, m.start()), out);
            out.add(specialIds.get(m.group()));
            start = m.end();
        }
        encodeOrdinary(text.substring(start), out);
        return out.toArray();
    }

    private void encodeOrdinary(String text, IntList out) {
        if (text.isEmpty()) return;
        Matcher m = PRE_TOKENIZER.matcher(text);
        StringBuilder word = new StringBuilder();
        while (m.find()) {
            word.setLength(0);
            for (byte b : m.group().getBytes(StandardCharsets.UTF_8)) word.append(ByteLevel.toChar(b));
            encoder.encode(word.toString(), out::add);
        }
    }

    /**
     * The text of the ids. Special tokens are kept as their text (Hugging Face's default,
     * skip_special_tokens=False) and no clean-up of spaces is done, so decode(encode(text)) == text.
     * Byte sequences that are not valid UTF-8 become U+FFFD.
     *
     * @throws IllegalArgumentException for an id this tokenizer cannot decode
     */
    public String decode(int[] ids) {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream(ids.length * 4);
        for (int id : ids) appendBytes(id, bytes);
        return bytes.toString(StandardCharsets.UTF_8);
    }

    void appendBytes(int id, ByteArrayOutputStream out) {
        if (!canDecode(id)) {
            throw new IllegalArgumentException("token id " + id + " is not in the vocabulary (size " + vocabSize() + ")");
        }
        String token = tokens[id];
        if (special[id]) {
            out.writeBytes(token.getBytes(StandardCharsets.UTF_8));
            return;
        }
        for (int i = 0; i < token.length(); i++) {
            int b = ByteLevel.toByte(token.charAt(i));
            if (b < 0) { // not a byte-level token: tokenizers' ByteLevel decoder then keeps the token's own text
                out.writeBytes(token.getBytes(StandardCharsets.UTF_8));
                return;
            }
        }
        for (int i = 0; i < token.length(); i++) out.write(ByteLevel.toByte(token.charAt(i)));
    }

    /** A decoder for generated ids that never splits a UTF-8 character; one per sequence. */
    public StreamingDecoder streamingDecoder() {
        return new StreamingDecoder(this);
    }

    /** One past the largest id with a token: ids at or above it (e.g. padding rows of the embedding) never decode. */
    public int vocabSize() {
        return tokens.length;
    }

    /** Whether the id has a token (ids below {@link #vocabSize()} may be unused). */
    public boolean canDecode(int id) {
        return id >= 0 && id < tokens.length && tokens[id] != null;
    }

    /** The vocabulary entry of the id, in byte-level characters (e.g. "Ġthe"), or a special token's text. */
    public String token(int id) {
        if (!canDecode(id)) {
            throw new IllegalArgumentException("token id " + id + " is not in the vocabulary (size " + vocabSize() + ")");
        }
        return tokens[id];
    }

    /** The id of a vocabulary entry or special token, e.g. id("</s>"). */
    public OptionalInt id(String token) {
        Integer id = ids.get(token);
        return id == null ? OptionalInt.empty() : OptionalInt.of(id);
    }

    public boolean isSpecial(int id) {
        return id >= 0 && id < special.length && special[id];
    }

    /** The id of the token the config names for a role such as "bos_token", "eos_token", "pad_token", "unk_token". */
    public OptionalInt specialId(String role) {
        String token = specialRoles.get(role);
        return token == null ? OptionalInt.empty() : id(token);
    }

    /** Growable int array, so encoding does not box every id. */
    private static final class IntList {
        private int[] values;
        private int size;

        IntList(int capacity) {
            values = new int[capacity];
        }

        void add(int value) {
            if (size == values.length) values = Arrays.copyOf(values, size * 2);
            values[size++] = value;
        }

        int[] toArray() {
            return Arrays.copyOf(values, size);
        }
    }
}
