package io.dejavu.model;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.IOException;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

/** Writes float32 tensors as a .safetensors file that {@link SafetensorsFile} (and the Python library) reads. */
public final class SafetensorsWriter {
    /** A tensor to write: its name, shape and row-major data. */
    public record Entry(String name, long[] shape, float[] data) {
        public Entry {
            long n = 1;
            for (long d : shape) n *= d;
            if (n != data.length) throw new IllegalArgumentException("tensor " + name + ": shape and data disagree");
        }
    }

    private SafetensorsWriter() {
    }

    public static void write(Path file, List<Entry> entries) throws IOException {
        ObjectMapper json = new ObjectMapper();
        ObjectNode header = json.createObjectNode();
        long offset = 0;
        for (Entry e : entries) {
            ObjectNode info = header.putObject(e.name());
            info.put("dtype", "F32");
            info.putArray("shape").addAll(java.util.Arrays.stream(e.shape()).mapToObj(json.getNodeFactory()::numberNode).toList());
            info.putArray("data_offsets").add(offset).add(offset + 4L * e.data().length);
            offset += 4L * e.data().length;
        }
        byte[] headerBytes = json.writeValueAsString(header).getBytes(StandardCharsets.UTF_8);
        // The data must start 8-byte aligned: pad the header with spaces, as the format allows.
        int padded = (headerBytes.length + 7) & ~7;
        ByteBuffer prefix = ByteBuffer.allocate(8 + padded).order(ByteOrder.LITTLE_ENDIAN);
        prefix.putLong(padded).put(headerBytes);
        while (prefix.hasRemaining()) prefix.put((byte) ' ');
        Files.createDirectories(file.toAbsolutePath().getParent());
        try (OutputStream out = new java.io.BufferedOutputStream(Files.newOutputStream(file), 1 << 20)) {
            out.write(prefix.array());
            ByteBuffer chunk = ByteBuffer.allocate(1 << 16).order(ByteOrder.LITTLE_ENDIAN);
            for (Entry e : entries) {
                for (float f : e.data()) {
                    if (!chunk.hasRemaining()) {
                        out.write(chunk.array(), 0, chunk.position());
                        chunk.clear();
                    }
                    chunk.putFloat(f);
                }
            }
            out.write(chunk.array(), 0, chunk.position());
        }
    }
}
