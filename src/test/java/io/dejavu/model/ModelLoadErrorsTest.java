package io.dejavu.model;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.*;

/** Every broken model directory gets a ModelLoadException naming the file and the problem. */
class ModelLoadErrorsTest {
    @TempDir
    Path dir;

    private String loadError() {
        return assertThrows(ModelLoadException.class, () -> OptModel.load(dir).close()).getMessage();
    }

    private static void assertMentions(String message, String... parts) {
        for (String part : parts) assertTrue(message.contains(part), "'" + part + "' not in: " + message);
    }

    @Test
    void theTinyModelLoads() throws IOException {
        CheckpointFiles.tinyModel(dir, CheckpointFiles.tinyTensors());
        try (OptModel model = OptModel.load(dir)) {
            assertSame(model.weights().embedTokens(), model.weights().lmHead());
            assertEquals(7f, model.weights().layers().getFirst().fc1Bias().get(7));
        }
    }

    @Test
    void missingConfig() throws IOException {
        CheckpointFiles.writeSafetensors(dir.resolve("model.safetensors"), CheckpointFiles.tinyTensors());
        assertMentions(loadError(), dir.resolve("config.json").toString(), "missing");
    }

    @Test
    void missingWeights() throws IOException {
        Files.writeString(dir.resolve("config.json"), CheckpointFiles.TINY_CONFIG);
        assertMentions(loadError(), dir.toString(), "no weights found", "model.safetensors", "pytorch_model.bin");
    }

    @Test
    void truncatedSafetensors() throws IOException {
        CheckpointFiles.tinyModel(dir, CheckpointFiles.tinyTensors());
        Path file = dir.resolve("model.safetensors");
        byte[] bytes = Files.readAllBytes(file);
        Files.write(file, java.util.Arrays.copyOf(bytes, bytes.length - 10));
        assertMentions(loadError(), file.toString(), "outside the", "truncated");
        Files.write(file, java.util.Arrays.copyOf(bytes, 100));
        assertMentions(loadError(), file.toString(), "malformed safetensors header", "truncated");
    }

    @Test
    void malformedHeaderJson() throws IOException {
        CheckpointFiles.tinyModel(dir, CheckpointFiles.tinyTensors());
        Path file = dir.resolve("model.safetensors");
        byte[] bytes = Files.readAllBytes(file);
        bytes[8] = '['; // the header's opening brace
        bytes[9] = ',';
        Files.write(file, bytes);
        assertMentions(loadError(), file.toString(), "malformed safetensors header");
    }

    @Test
    void tensorWithWrongShape() throws IOException {
        Map<String, long[]> tensors = CheckpointFiles.tinyTensors();
        tensors.put("model.decoder.layers.0.fc1.weight", new long[]{4, 8});
        CheckpointFiles.tinyModel(dir, tensors);
        assertMentions(loadError(), dir.resolve("model.safetensors").toString(),
                "model.decoder.layers.0.fc1.weight", "[4, 8]", "config.json implies [8, 4]");
    }

    @Test
    void missingTensor() throws IOException {
        Map<String, long[]> tensors = CheckpointFiles.tinyTensors();
        tensors.remove("model.decoder.layers.0.self_attn.v_proj.bias");
        CheckpointFiles.tinyModel(dir, tensors);
        assertMentions(loadError(), dir.toString(), "missing tensor model.decoder.layers.0.self_attn.v_proj.bias");
    }

    @Test
    void unsupportedModelType() throws IOException {
        CheckpointFiles.tinyModel(dir, CheckpointFiles.tinyTensors());
        Files.writeString(dir.resolve("config.json"), CheckpointFiles.TINY_CONFIG.replace("\"opt\"", "\"llama\""));
        assertMentions(loadError(), dir.resolve("config.json").toString(), "unsupported model_type 'llama'", "supported: opt");
    }

    @Test
    void shardMissingFromIndex() throws IOException {
        CheckpointFiles.tinyModel(dir, CheckpointFiles.tinyTensors());
        Files.delete(dir.resolve("model.safetensors"));
        Files.writeString(dir.resolve("model.safetensors.index.json"),
                "{\"weight_map\": {\"model.decoder.embed_tokens.weight\": \"model-00001-of-00002.safetensors\"}}");
        assertMentions(loadError(), dir.resolve("model-00001-of-00002.safetensors").toString(), "missing");
    }

    @Test
    void forbiddenGlobalInPytorchBin() throws IOException {
        Files.writeString(dir.resolve("config.json"), CheckpointFiles.TINY_CONFIG);
        byte[] pickle = new CheckpointFiles.Pickle().raw(0x80, 2).global("os", "system").string("true").raw(0x85, 'R', '.').bytes();
        CheckpointFiles.writeTorchZip(dir.resolve("pytorch_model.bin"), pickle, Map.of(), false);
        assertMentions(loadError(), dir.resolve("pytorch_model.bin").toString(), "refusing to load", "os.system");
    }
}
