package io.dejavu.engine.cuda;

import io.dejavu.model.OptConfig;

import java.io.IOException;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;

/**
 * Writes a seeded random pre-LN OPT checkpoint (config.json + one fp16 model.safetensors, tied head) of given shapes,
 * so that two engines can be compared on the same weights. Scales keep logits well separated: embeddings N(0, 0.5),
 * matrices N(0, 1/in), biases N(0, 0.05), LayerNorm gamma 1 + N(0, 0.1).
 */
final class RandomOptCheckpoint {
    private RandomOptCheckpoint() {
    }

    static Path write(Path dir, int hidden, int layers, int heads, int ffn, int vocab, int maxPositions, long seed)
            throws IOException {
        Files.createDirectories(dir);
        Files.writeString(dir.resolve("config.json"), """
                {"model_type": "opt", "hidden_size": %d, "num_hidden_layers": %d, "num_attention_heads": %d,
                 "ffn_dim": %d, "vocab_size": %d, "max_position_embeddings": %d, "word_embed_proj_dim": %d,
                 "do_layer_norm_before": true, "enable_bias": true, "activation_function": "relu",
                 "bos_token_id": 2, "eos_token_id": 2, "pad_token_id": 1, "torch_dtype": "float16"}
                """.formatted(hidden, layers, heads, ffn, vocab, maxPositions, hidden));
        Random random = new Random(seed);
        Map<String, short[]> tensors = new LinkedHashMap<>();
        Map<String, long[]> shapes = new LinkedHashMap<>();
        String p = "model.decoder.";
        add(tensors, shapes, p + "embed_tokens.weight", random, 0, 0.5, vocab, hidden);
        add(tensors, shapes, p + "embed_positions.weight", random, 0, 0.1, maxPositions + OptConfig.POSITION_OFFSET, hidden);
        for (int l = 0; l < layers; l++) {
            String q = p + "layers." + l + ".";
            for (String proj : new String[]{"q_proj", "k_proj", "v_proj", "out_proj"}) {
                add(tensors, shapes, q + "self_attn." + proj + ".weight", random, 0, 1 / Math.sqrt(hidden), hidden, hidden);
                add(tensors, shapes, q + "self_attn." + proj + ".bias", random, 0, 0.05, hidden);
            }
            for (String norm : new String[]{"self_attn_layer_norm", "final_layer_norm"}) {
                add(tensors, shapes, q + norm + ".weight", random, 1, 0.1, hidden);
                add(tensors, shapes, q + norm + ".bias", random, 0, 0.05, hidden);
            }
            add(tensors, shapes, q + "fc1.weight", random, 0, 1 / Math.sqrt(hidden), ffn, hidden);
            add(tensors, shapes, q + "fc1.bias", random, 0, 0.05, ffn);
            add(tensors, shapes, q + "fc2.weight", random, 0, 1 / Math.sqrt(ffn), hidden, ffn);
            add(tensors, shapes, q + "fc2.bias", random, 0, 0.05, hidden);
        }
        add(tensors, shapes, p + "final_layer_norm.weight", random, 1, 0.1, hidden);
        add(tensors, shapes, p + "final_layer_norm.bias", random, 0, 0.05, hidden);

        StringBuilder header = new StringBuilder("{");
        long offset = 0;
        for (var e : tensors.entrySet()) {
            long bytes = 2L * e.getValue().length;
            if (header.length() > 1) header.append(',');
            header.append('"').append(e.getKey()).append("\":{\"dtype\":\"F16\",\"shape\":")
                    .append(java.util.Arrays.toString(shapes.get(e.getKey())).replace(" ", ""))
                    .append(",\"data_offsets\":[").append(offset).append(',').append(offset + bytes).append("]}");
            offset += bytes;
        }
        header.append('}');
        while ((header.length() % 8) != 0) header.append(' ');
        byte[] h = header.toString().getBytes(StandardCharsets.UTF_8);
        try (OutputStream out = new java.io.BufferedOutputStream(Files.newOutputStream(dir.resolve("model.safetensors")), 1 << 20)) {
            out.write(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(h.length).array());
            out.write(h);
            for (short[] t : tensors.values()) {
                ByteBuffer b = ByteBuffer.allocate(2 * t.length).order(ByteOrder.LITTLE_ENDIAN);
                for (short v : t) b.putShort(v);
                out.write(b.array());
            }
        }
        return dir;
    }

    private static void add(Map<String, short[]> tensors, Map<String, long[]> shapes, String name, Random random,
                            double mean, double std, long... shape) {
        long n = 1;
        for (long d : shape) n *= d;
        short[] v = new short[(int) n];
        for (int i = 0; i < v.length; i++) v[i] = Float.floatToFloat16((float) (mean + std * random.nextGaussian()));
        tensors.put(name, v);
        shapes.put(name, shape);
    }
}
