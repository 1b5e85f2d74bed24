package io.dejavu.tokenizer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.dejavu.model.ModelLoadException;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;
import java.util.OptionalInt;
import java.util.stream.Collectors;

import static org.junit.jupiter.api.Assertions.*;

class TokenizerTest {
    private static final Path SHARED = Path.of(System.getProperty("dejavu.shared"));
    private static final Path OPT_MINI = SHARED.resolve("models/opt-mini");
    private static final Path OPT_DEMO = Path.of("models/opt-demo");

    private record Parity(String text, int[] gpt2Ids, int[] optMiniIds) {
    }

    private static List<Parity> parity;
    private static Tokenizer gpt2;
    private static Tokenizer optMini;

    @BeforeAll
    static void load() throws IOException {
        ObjectMapper json = new ObjectMapper();
        parity = new ArrayList<>();
        for (String line : Files.readAllLines(SHARED.resolve("golden/tokenizer-parity.jsonl"))) {
            if (line.isBlank()) continue;
            JsonNode node = json.readTree(line);
            parity.add(new Parity(node.get("text").asText(), json.treeToValue(node.get("gpt2_ids"), int[].class),
                    json.treeToValue(node.get("opt_mini_ids"), int[].class)));
        }
        assertFalse(parity.isEmpty());
        gpt2 = Tokenizer.load(SHARED.resolve("tokenizers/gpt2"));
        optMini = Tokenizer.load(OPT_MINI);
    }

    @Test
    void gpt2IdsMatchHuggingFaceOnEveryParityLine() {
        for (Parity p : parity) assertArrayEquals(p.gpt2Ids(), gpt2.encode(p.text()), p.text());
    }

    @Test
    void optMiniIdsMatchHuggingFaceOnEveryParityLine() {
        for (Parity p : parity) assertArrayEquals(p.optMiniIds(), optMini.encode(p.text()), p.text());
    }

    /**
     * Ids from Hugging Face tokenizers 0.23.2 (see generate-hf-reference.py next to the file) for a whole corpus
     * file and for white-space, contraction, special-token, Unicode and random edge cases.
     */
    @Test
    void idsMatchHuggingFaceOnCorpusAndEdgeCases() throws IOException {
        ObjectMapper json = new ObjectMapper();
        List<String> lines;
        try (var in = TokenizerTest.class.getResourceAsStream("hf-reference.jsonl")) {
            lines = new String(in.readAllBytes(), StandardCharsets.UTF_8).lines().toList();
        }
        JsonNode corpus = json.readTree(lines.getFirst());
        String text = Files.readString(SHARED.resolve(corpus.get("corpus").asText()));
        int[] gpt2Ids = gpt2.encode(text);
        int[] optMiniIds = optMini.encode(text);
        assertEquals(corpus.get("gpt2_count").asInt(), gpt2Ids.length);
        assertEquals(corpus.get("gpt2_sha256").asText(), sha256(gpt2Ids));
        assertEquals(corpus.get("opt_mini_count").asInt(), optMiniIds.length);
        assertEquals(corpus.get("opt_mini_sha256").asText(), sha256(optMiniIds));
        for (String line : lines.subList(1, lines.size())) {
            JsonNode node = json.readTree(line);
            String edgeCase = node.get("text").asText();
            assertArrayEquals(json.treeToValue(node.get("gpt2_ids"), int[].class), gpt2.encode(edgeCase), line);
            int[] ids = json.treeToValue(node.get("opt_mini_ids"), int[].class);
            assertArrayEquals(ids, optMini.encode(edgeCase), line);
            assertEquals(node.get("opt_mini_decoded").asText(), optMini.decode(ids), line);
        }
    }

    private static String sha256(int[] ids) {
        String joined = Arrays.stream(ids).mapToObj(Integer::toString).collect(Collectors.joining(","));
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(joined.getBytes(StandardCharsets.UTF_8)));
        } catch (NoSuchAlgorithmException e) {
            throw new AssertionError(e);
        }
    }

    @Test
    void vocabMergesLoaderAgreesWithTokenizerJson(@TempDir Path tmp) throws IOException {
        String sotu = Files.readString(SHARED.resolve("data/eval-sotu-1990-2001.txt"));
        String sample = sotu.substring(0, Math.min(sotu.length(), 50_000)) + " </s><s>x<pad>";
        for (Path modelDir : List.of(OPT_MINI, OPT_DEMO)) {
            Tokenizer fromTokenizerJson = Tokenizer.load(modelDir);
            Path legacy = Files.createDirectories(tmp.resolve(modelDir.getFileName()));
            for (String file : List.of("vocab.json", "merges.txt", "tokenizer_config.json")) {
                Files.copy(modelDir.resolve(file), legacy.resolve(file));
            }
            Tokenizer fromVocabMerges = Tokenizer.load(legacy);
            assertEquals(fromTokenizerJson.vocabSize(), fromVocabMerges.vocabSize(), modelDir.toString());
            assertArrayEquals(fromTokenizerJson.encode(sample), fromVocabMerges.encode(sample), modelDir.toString());
            for (Parity p : parity) {
                assertArrayEquals(fromTokenizerJson.encode(p.text()), fromVocabMerges.encode(p.text()), p.text());
            }
        }
    }

    @Test
    void decodeInvertsEncode() {
        for (Parity p : parity) {
            assertEquals(p.text(), gpt2.decode(gpt2.encode(p.text())));
            assertEquals(p.text(), optMini.decode(optMini.encode(p.text())));
            assertEquals(p.text(), optMini.decode(p.optMiniIds()));
        }
    }

    @Test
    void specialTokensAreMatchedInTextAndDecodedToTheirText() {
        assertEquals(OptionalInt.of(2), optMini.id("</s>"));
        assertEquals(OptionalInt.of(0), optMini.specialId("bos_token"));
        assertEquals(OptionalInt.of(2), optMini.specialId("eos_token"));
        assertEquals(OptionalInt.of(1), optMini.specialId("pad_token"));
        assertEquals("</s>", optMini.token(2));
        assertTrue(optMini.isSpecial(2));
        int[] ids = optMini.encode("x</s>y");
        assertArrayEquals(new int[] {91, 2, optMini.encode("y")[0]}, ids);
        assertEquals("x</s>y", optMini.decode(ids));
    }

    @Test
    void vocabSizeCoversEveryTokenAndNoPaddingRow() {
        assertEquals(50257, gpt2.vocabSize());
        assertEquals(16384, optMini.vocabSize());
        assertTrue(optMini.canDecode(16383));
        assertFalse(optMini.canDecode(16384));
        assertFalse(optMini.canDecode(-1));
        assertThrows(IllegalArgumentException.class, () -> optMini.decode(new int[] {16384}));
    }

    @Test
    void streamingDecodeNeverSplitsACharacter() {
        String text = "Emoji 🚀🔥👍🏽 done, CJK 東京都の天気, accents naïve façade Ελληνικά Привет, and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢.";
        for (Tokenizer tokenizer : List.of(gpt2, optMini)) {
            int[] ids = tokenizer.encode(text);
            StreamingDecoder decoder = tokenizer.streamingDecoder();
            StringBuilder streamed = new StringBuilder();
            int heldBack = 0;
            for (int id : ids) {
                String piece = decoder.append(id);
                if (piece.isEmpty()) heldBack++;
                assertFalse(piece.contains("\uFFFD"), "replacement character emitted for id " + id);
                if (!piece.isEmpty()) {
                    assertFalse(Character.isHighSurrogate(piece.charAt(piece.length() - 1)), "split surrogate pair");
                    assertFalse(Character.isLowSurrogate(piece.charAt(0)), "split surrogate pair");
                }
                streamed.append(piece);
            }
            streamed.append(decoder.flush());
            assertEquals(text, streamed.toString());
            assertTrue(heldBack > 0, "the text should contain characters split over several tokens");
        }
    }

    @Test
    void streamingFlushTurnsAnIncompleteCharacterIntoReplacement() {
        // "🚀" is F0 9F 9A 80; tokens holding its bytes one at a time come from the byte-level alphabet.
        StreamingDecoder decoder = gpt2.streamingDecoder();
        assertEquals("", decoder.append(gpt2.id(String.valueOf(ByteLevel.toChar((byte) 0xF0))).orElseThrow()));
        assertEquals("", decoder.append(gpt2.id(String.valueOf(ByteLevel.toChar((byte) 0x9F))).orElseThrow()));
        assertEquals("\uFFFD", decoder.flush());
        assertEquals("", decoder.flush());
    }

    @Test
    void missingDirectoryOrFilesAreNamed(@TempDir Path tmp) throws IOException {
        Path absent = tmp.resolve("no-such-model");
        ModelLoadException e = assertThrows(ModelLoadException.class, () -> Tokenizer.load(absent));
        assertTrue(e.getMessage().contains(absent.toString()) && e.getMessage().contains("not a directory"), e.getMessage());

        Files.copy(OPT_MINI.resolve("vocab.json"), tmp.resolve("vocab.json"));
        e = assertThrows(ModelLoadException.class, () -> Tokenizer.load(tmp));
        assertTrue(e.getMessage().contains("merges.txt") && e.getMessage().contains("missing"), e.getMessage());
    }

    @Test
    void malformedFilesAreNamed(@TempDir Path tmp) throws IOException {
        Files.writeString(tmp.resolve("tokenizer.json"), "{\"model\": {\"vocab\": {\"a\": 0,");
        ModelLoadException e = assertThrows(ModelLoadException.class, () -> Tokenizer.load(tmp));
        assertTrue(e.getMessage().contains("tokenizer.json") && e.getMessage().contains("not valid JSON"), e.getMessage());

        Files.delete(tmp.resolve("tokenizer.json"));
        Files.writeString(tmp.resolve("vocab.json"), "{\"a\": 0, \"b\": 1, \"ab\": 2}");
        Files.writeString(tmp.resolve("merges.txt"), "#version: 0.2\na b\nab\n");
        e = assertThrows(ModelLoadException.class, () -> Tokenizer.load(tmp));
        assertTrue(e.getMessage().contains("merges.txt") && e.getMessage().contains("line 3"), e.getMessage());

        Files.writeString(tmp.resolve("vocab.json"), "[\"a\", \"b\"]");
        e = assertThrows(ModelLoadException.class, () -> Tokenizer.load(tmp));
        assertTrue(e.getMessage().contains("vocab.json") && e.getMessage().contains("vocabulary"), e.getMessage());

        Files.writeString(tmp.resolve("vocab.json"), "{\"a\": 0, \"b\": 1, \"ab\": 2}");
        Files.writeString(tmp.resolve("merges.txt"), "a b\n");
        Files.writeString(tmp.resolve("tokenizer_config.json"), "{\"eos_token\": 7");
        e = assertThrows(ModelLoadException.class, () -> Tokenizer.load(tmp));
        assertTrue(e.getMessage().contains("tokenizer_config.json") && e.getMessage().contains("not valid JSON"), e.getMessage());
    }

    @Test
    void unsupportedTokenizerJsonIsRejected(@TempDir Path tmp) throws IOException {
        Files.writeString(tmp.resolve("tokenizer.json"), "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}");
        ModelLoadException e = assertThrows(ModelLoadException.class, () -> Tokenizer.load(tmp));
        assertTrue(e.getMessage().contains("WordPiece"), e.getMessage());
    }
}
