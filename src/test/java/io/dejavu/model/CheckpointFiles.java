package io.dejavu.model;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.zip.CRC32;
import java.util.zip.ZipEntry;
import java.util.zip.ZipOutputStream;

/** Writers of small checkpoint files for tests: safetensors, a tiny OPT model directory, torch.save-like zips. */
final class CheckpointFiles {
    private static final ObjectMapper JSON = new ObjectMapper();

    private CheckpointFiles() {
    }

    /** Writes {@code tensors} (name to shape; F16 values 0, 1, 2, ... per tensor) as a safetensors file. */
    static void writeSafetensors(Path file, Map<String, long[]> tensors) throws IOException {
        ObjectNode header = JSON.createObjectNode();
        ByteArrayOutputStream data = new ByteArrayOutputStream();
        for (Map.Entry<String, long[]> e : tensors.entrySet()) {
            long n = 1;
            for (long d : e.getValue()) n *= d;
            ObjectNode info = header.putObject(e.getKey());
            info.put("dtype", "F16");
            info.putArray("shape").addAll(java.util.Arrays.stream(e.getValue()).mapToObj(JSON.getNodeFactory()::numberNode).toList());
            info.putArray("data_offsets").add(data.size()).add(data.size() + 2 * n);
            ByteBuffer values = ByteBuffer.allocate((int) (2 * n)).order(ByteOrder.LITTLE_ENDIAN);
            for (int i = 0; i < n; i++) values.putShort(Float.floatToFloat16(i % 2048));
            data.write(values.array());
        }
        byte[] headerBytes = JSON.writeValueAsBytes(header);
        try (OutputStream out = Files.newOutputStream(file)) {
            out.write(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(headerBytes.length).array());
            out.write(headerBytes);
            data.writeTo(out);
        }
    }

    static final String TINY_CONFIG = """
            {"model_type": "opt", "hidden_size": 4, "num_hidden_layers": 1, "num_attention_heads": 2, "ffn_dim": 8,
             "vocab_size": 10, "max_position_embeddings": 6, "word_embed_proj_dim": 4}""";

    /** The tensors (name to shape) of the model {@link #TINY_CONFIG} describes, in the model.decoder.* layout. */
    static Map<String, long[]> tinyTensors() {
        Map<String, long[]> t = new LinkedHashMap<>();
        String d = "model.decoder.";
        t.put(d + "embed_tokens.weight", new long[]{10, 4});
        t.put(d + "embed_positions.weight", new long[]{8, 4});
        t.put(d + "final_layer_norm.weight", new long[]{4});
        t.put(d + "final_layer_norm.bias", new long[]{4});
        String l = d + "layers.0.";
        for (String norm : new String[]{"self_attn_layer_norm", "final_layer_norm"}) {
            t.put(l + norm + ".weight", new long[]{4});
            t.put(l + norm + ".bias", new long[]{4});
        }
        for (String proj : new String[]{"q_proj", "k_proj", "v_proj", "out_proj"}) {
            t.put(l + "self_attn." + proj + ".weight", new long[]{4, 4});
            t.put(l + "self_attn." + proj + ".bias", new long[]{4});
        }
        t.put(l + "fc1.weight", new long[]{8, 4});
        t.put(l + "fc1.bias", new long[]{8});
        t.put(l + "fc2.weight", new long[]{4, 8});
        t.put(l + "fc2.bias", new long[]{4});
        return t;
    }

    /** A complete tiny OPT model directory with the given tensors. */
    static Path tinyModel(Path dir, Map<String, long[]> tensors) throws IOException {
        Files.writeString(dir.resolve("config.json"), TINY_CONFIG);
        writeSafetensors(dir.resolve("model.safetensors"), tensors);
        return dir;
    }

    /** A zip laid out as torch.save writes it: {@code archive/data.pkl} plus storages, STORED unless told. */
    static void writeTorchZip(Path file, byte[] pickle, Map<String, byte[]> storages, boolean compressStorages) throws IOException {
        try (ZipOutputStream zip = new ZipOutputStream(Files.newOutputStream(file))) {
            entry(zip, "archive/data.pkl", pickle, false);
            entry(zip, "archive/byteorder", "little".getBytes(StandardCharsets.US_ASCII), false);
            for (Map.Entry<String, byte[]> e : storages.entrySet()) entry(zip, "archive/data/" + e.getKey(), e.getValue(), compressStorages);
        }
    }

    /**
     * The same layout written with every size and offset in its ZIP64 form, as torch.save writes shards over 4 GB,
     * and each entry's data padded to 64 bytes by an extra field, as torch aligns storages.
     */
    static void writeTorchZip64(Path file, byte[] pickle, Map<String, byte[]> storages) throws IOException {
        Map<String, byte[]> entries = new LinkedHashMap<>();
        entries.put("archive/data.pkl", pickle);
        storages.forEach((key, bytes) -> entries.put("archive/data/" + key, bytes));
        ByteBuffer out = ByteBuffer.allocate(1 << 20).order(ByteOrder.LITTLE_ENDIAN);
        Map<String, Long> offsets = new LinkedHashMap<>();
        for (Map.Entry<String, byte[]> e : entries.entrySet()) {
            byte[] name = e.getKey().getBytes(StandardCharsets.UTF_8);
            offsets.put(e.getKey(), (long) out.position());
            int unpadded = out.position() + 30 + name.length + 20 + 4;
            int padding = (64 - unpadded % 64) % 64;
            out.putInt(0x04034b50).putShort((short) 45).putShort((short) 0).putShort((short) 0).putInt(0)
                    .putInt(crc(e.getValue())).putInt(-1).putInt(-1).putShort((short) name.length)
                    .putShort((short) (20 + 4 + padding)).put(name)
                    .putShort((short) 1).putShort((short) 16).putLong(e.getValue().length).putLong(e.getValue().length)
                    .putShort((short) 0x4650).putShort((short) padding).put(new byte[padding])
                    .put(e.getValue());
        }
        long directory = out.position();
        for (Map.Entry<String, byte[]> e : entries.entrySet()) {
            byte[] name = e.getKey().getBytes(StandardCharsets.UTF_8);
            out.putInt(0x02014b50).putShort((short) 45).putShort((short) 45).putShort((short) 0).putShort((short) 0)
                    .putInt(0).putInt(crc(e.getValue())).putInt(-1).putInt(-1).putShort((short) name.length)
                    .putShort((short) 28).putShort((short) 0).putShort((short) 0).putShort((short) 0).putInt(0).putInt(-1)
                    .put(name).putShort((short) 1).putShort((short) 24)
                    .putLong(e.getValue().length).putLong(e.getValue().length).putLong(offsets.get(e.getKey()));
        }
        long end64 = out.position();
        out.putInt(0x06064b50).putLong(44).putShort((short) 45).putShort((short) 45).putInt(0).putInt(0)
                .putLong(entries.size()).putLong(entries.size()).putLong(end64 - directory).putLong(directory);
        out.putInt(0x07064b50).putInt(0).putLong(end64).putInt(1);
        out.putInt(0x06054b50).putShort((short) 0).putShort((short) 0).putShort((short) -1).putShort((short) -1)
                .putInt(-1).putInt(-1).putShort((short) 0);
        Files.write(file, java.util.Arrays.copyOf(out.array(), out.position()));
    }

    private static int crc(byte[] bytes) {
        CRC32 crc = new CRC32();
        crc.update(bytes);
        return (int) crc.getValue();
    }

    private static void entry(ZipOutputStream zip, String name, byte[] bytes, boolean compress) throws IOException {
        ZipEntry entry = new ZipEntry(name);
        if (!compress) {
            entry.setMethod(ZipEntry.STORED);
            entry.setSize(bytes.length);
            entry.setCrc(Integer.toUnsignedLong(crc(bytes)));
        }
        zip.putNextEntry(entry);
        zip.write(bytes);
        zip.closeEntry();
    }

    /** Pickle opcodes (protocol 2) for hand-made state dicts. */
    static final class Pickle {
        private final ByteArrayOutputStream out = new ByteArrayOutputStream();

        Pickle raw(int... bytes) {
            for (int b : bytes) out.write(b);
            return this;
        }

        Pickle string(String s) {
            byte[] b = s.getBytes(StandardCharsets.UTF_8);
            raw('X').raw(b.length & 0xFF, (b.length >> 8) & 0xFF, 0, 0);
            out.writeBytes(b);
            return this;
        }

        Pickle global(String module, String name) {
            raw('c');
            out.writeBytes((module + "\n" + name + "\n").getBytes(StandardCharsets.US_ASCII));
            return this;
        }

        byte[] bytes() {
            return out.toByteArray();
        }

        Pickle integer(int v) {
            return raw('J', v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF, (v >>> 24));
        }

        Pickle tuple(int... values) {
            raw('(');
            for (int v : values) integer(v);
            return raw('t');
        }

        /**
         * A state dict as module.state_dict() pickles: OrderedDict() filled by SETITEMS, then BUILD sets its
         * _metadata (an OrderedDict of module versions); the tensor is wrapped by _rebuild_parameter.
         */
        static byte[] orderedDictWithMetadata(String name, int size) {
            return new Pickle().raw(0x80, 2).global("collections", "OrderedDict").raw(')', 'R', 'q', 0, '(').string(name)
                    .global("torch._utils", "_rebuild_parameter").raw('(')
                    .global("torch._utils", "_rebuild_tensor_v2").raw('(')
                    .raw('(').string("storage").global("torch", "FloatStorage").string("0").string("cpu").integer(size).raw('t', 'Q')
                    .integer(0).tuple(size).tuple(1).raw(0x89).raw('h', 0, 't', 'R') // hooks: memo 0, an OrderedDict
                    .raw(0x88).raw('h', 0, 't', 'R')
                    .raw('u')
                    .raw('}').string("_metadata").global("collections", "OrderedDict").raw(')', 'R')
                    .string("").raw('}').string("version").integer(1).raw('s', 's', 's', 'b', '.')
                    .bytes();
        }

        /** A state dict {name: _rebuild_tensor_v2(HalfStorage key "0" of storageSize, offset, shape, stride)}. */
        static byte[] halfTensor(String name, int storageSize, int offset, int[] shape, int[] stride) {
            Pickle p = new Pickle().raw(0x80, 2, '}', '(').string(name)
                    .global("torch._utils", "_rebuild_tensor_v2").raw('(')
                    .raw('(').string("storage").global("torch", "HalfStorage").string("0").string("cpu").integer(storageSize).raw('t', 'Q')
                    .integer(offset).tuple(shape).tuple(stride).raw(0x89)
                    .global("collections", "OrderedDict").raw(')', 'R')
                    .raw('t', 'R', 'u', '.');
            return p.bytes();
        }
    }
}
