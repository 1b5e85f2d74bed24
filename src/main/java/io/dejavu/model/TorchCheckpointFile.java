package io.dejavu.model;

import io.dejavu.model.StateDictPickle.TensorRef;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Reads PyTorch pytorch_model*.bin files without executing the pickle: torch.save writes a zip archive holding
 * {@code <archive>/data.pkl} (the state dict, tensors as references to storages) and one uncompressed entry
 * {@code <archive>/data/<key>} per storage. The file is mapped and each tensor is a view of its storage's entry.
 */
final class TorchCheckpointFile {
    private TorchCheckpointFile() {
    }

    static Map<String, Tensor> read(Path file, Arena arena) {
        StoredZip zip = StoredZip.read(file, MappedFile.map(file, arena));
        String pickleEntry = null;
        for (String name : zip.names()) {
            if (name.endsWith("/data.pkl") && name.indexOf('/') == name.length() - "/data.pkl".length()) {
                pickleEntry = name;
                break;
            }
        }
        if (pickleEntry == null) {
            throw new ModelLoadException(file, "not a PyTorch checkpoint: the zip archive has no <archive>/data.pkl");
        }
        String archive = pickleEntry.substring(0, pickleEntry.length() - "data.pkl".length());
        if (zip.contains(archive + "byteorder")) {
            String order = new String(zip.data(archive + "byteorder").toArray(ValueLayout.JAVA_BYTE), StandardCharsets.US_ASCII);
            if (!order.equals("little")) throw new ModelLoadException(file, "tensors are stored " + order + "-endian; only little-endian is supported");
        }
        byte[] pickle = zip.data(pickleEntry).toArray(ValueLayout.JAVA_BYTE);
        Map<String, Tensor> tensors = new LinkedHashMap<>();
        StateDictPickle.read(file, pickleEntry, pickle).forEach((name, ref) ->
                tensors.put(name, tensor(file, name, ref, zip.data(archive + "data/" + ref.storage().key()))));
        return tensors;
    }

    private static Tensor tensor(Path file, String name, TensorRef ref, MemorySegment storage) {
        DType dtype = ref.storage().dtype();
        long elements = 1;
        long expectedStride = 1;
        for (int i = ref.shape().length - 1; i >= 0; i--) {
            long size = ref.shape()[i];
            if (size < 0) throw new ModelLoadException(file, "tensor " + name + " has a negative dimension " + Arrays.toString(ref.shape()));
            // A dimension of size 1 may carry any stride in a contiguous tensor.
            if (size > 1 && (i >= ref.stride().length || ref.stride()[i] != expectedStride)) {
                throw new ModelLoadException(file, "tensor " + name + " of shape " + Arrays.toString(ref.shape())
                        + " has strides " + Arrays.toString(ref.stride()) + ", not contiguous; save it after "
                        + ".contiguous() or convert the checkpoint to safetensors");
            }
            expectedStride *= size;
            elements *= size;
        }
        long storageElements = ref.storage().elements();
        if (storage.byteSize() < storageElements * dtype.bytes) {
            throw new ModelLoadException(file, "storage " + ref.storage().key() + " of tensor " + name + " has "
                    + storage.byteSize() + " bytes but holds " + storageElements + " " + dtype + " elements (truncated?)");
        }
        if (ref.offset() < 0 || ref.offset() + elements > storageElements) {
            throw new ModelLoadException(file, "tensor " + name + " (offset " + ref.offset() + ", " + elements
                    + " elements) runs past its storage of " + storageElements + " elements");
        }
        return new Tensor(name, dtype, ref.shape(), storage.asSlice(ref.offset() * dtype.bytes, elements * dtype.bytes), file);
    }
}
