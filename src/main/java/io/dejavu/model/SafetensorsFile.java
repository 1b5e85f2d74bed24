package io.dejavu.model;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Reads a .safetensors file: an 8-byte little-endian header length, a JSON header naming each tensor's dtype, shape
 * and byte range, then the raw data. The file is mapped, so tensors are views into the mapping.
 */
public final class SafetensorsFile {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final long MAX_HEADER = 100L * 1024 * 1024;

    private SafetensorsFile() {
    }

    /** Maps {@code file} into {@code arena} and returns its tensors by name, in header order. */
    public static Map<String, Tensor> read(Path file, Arena arena) {
        MemorySegment mapped = MappedFile.map(file, arena);
        long size = mapped.byteSize();
        if (size < 8) throw new ModelLoadException(file, "truncated safetensors file (" + size + " bytes, no header)");
        long headerLength = mapped.get(ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN), 0);
        if (headerLength <= 0 || headerLength > MAX_HEADER || 8 + headerLength > size) {
            throw new ModelLoadException(file, "malformed safetensors header: header length " + headerLength
                    + " does not fit in a file of " + size + " bytes (truncated or not a safetensors file)");
        }
        byte[] headerBytes = mapped.asSlice(8, headerLength).toArray(ValueLayout.JAVA_BYTE);
        JsonNode header;
        try {
            header = JSON.readTree(new String(headerBytes, StandardCharsets.UTF_8));
        } catch (IOException e) {
            throw new ModelLoadException(file, "malformed safetensors header: not valid JSON (" + e.getMessage().lines().findFirst().orElse("") + ")");
        }
        if (header == null || !header.isObject()) {
            throw new ModelLoadException(file, "malformed safetensors header: expected a JSON object");
        }
        MemorySegment data = mapped.asSlice(8 + headerLength);
        Map<String, Tensor> tensors = new LinkedHashMap<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = header.properties().iterator(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> entry = it.next();
            String name = entry.getKey();
            if (name.equals("__metadata__")) continue;
            tensors.put(name, tensor(file, name, entry.getValue(), data));
        }
        return tensors;
    }

    private static Tensor tensor(Path file, String name, JsonNode info, MemorySegment data) {
        JsonNode dtypeNode = info.get("dtype");
        JsonNode shapeNode = info.get("shape");
        JsonNode offsets = info.get("data_offsets");
        if (dtypeNode == null || shapeNode == null || !shapeNode.isArray() || offsets == null || !offsets.isArray()
                || offsets.size() != 2) {
            throw new ModelLoadException(file, "malformed safetensors header: tensor " + name
                    + " needs dtype, shape and data_offsets [begin, end]");
        }
        DType dtype = DType.fromSafetensors(dtypeNode.asText());
        if (dtype == null) {
            throw new ModelLoadException(file, "tensor " + name + " has dtype " + dtypeNode.asText()
                    + "; supported dtypes are F16, BF16 and F32");
        }
        long[] shape = new long[shapeNode.size()];
        long elements = 1;
        for (int i = 0; i < shape.length; i++) {
            shape[i] = shapeNode.get(i).asLong(-1);
            if (shape[i] < 0) throw new ModelLoadException(file, "malformed safetensors header: tensor " + name + " has a negative dimension");
            elements *= shape[i];
        }
        long begin = offsets.get(0).asLong(-1);
        long end = offsets.get(1).asLong(-1);
        if (begin < 0 || end < begin || end > data.byteSize()) {
            throw new ModelLoadException(file, "tensor " + name + " has data_offsets [" + begin + ", " + end
                    + "] outside the " + data.byteSize() + " data bytes (truncated file?)");
        }
        if (end - begin != elements * dtype.bytes) {
            throw new ModelLoadException(file, "tensor " + name + " has " + (end - begin) + " bytes but shape "
                    + java.util.Arrays.toString(shape) + " of " + dtype + " needs " + elements * dtype.bytes);
        }
        return new Tensor(name, dtype, shape, data.asSlice(begin, end - begin), file);
    }
}
