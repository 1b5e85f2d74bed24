package io.dejavu.model;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The entries of a mapped zip archive whose members are STORED, as torch.save writes them, each readable as a slice
 * of the mapping. java.util.zip cannot say where an entry's bytes start, which mapping needs, and the central
 * directory (with its ZIP64 forms, for shards over 4 GB) is small enough to read here.
 */
final class StoredZip {
    private static final ValueLayout.OfShort U16 = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfInt U32 = ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfLong U64 = ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final int END_OF_DIRECTORY = 0x06054b50;
    private static final int ZIP64_LOCATOR = 0x07064b50;
    private static final int ZIP64_END_OF_DIRECTORY = 0x06064b50;
    private static final int DIRECTORY_ENTRY = 0x02014b50;
    private static final int LOCAL_HEADER = 0x04034b50;
    private static final int ZIP64_EXTRA = 0x0001;
    private static final int METHOD_STORED = 0;
    private static final long UNSET32 = 0xFFFFFFFFL;

    private record Entry(int method, long size, long localHeader) {
    }

    private final Path file;
    private final MemorySegment mapped;
    private final Map<String, Entry> entries;

    private StoredZip(Path file, MemorySegment mapped, Map<String, Entry> entries) {
        this.file = file;
        this.mapped = mapped;
        this.entries = entries;
    }

    static StoredZip read(Path file, MemorySegment mapped) {
        try {
            return new StoredZip(file, mapped, readDirectory(file, mapped));
        } catch (IndexOutOfBoundsException e) {
            throw new ModelLoadException(file, "malformed zip archive: a record points outside the file (truncated?)");
        }
    }

    Iterable<String> names() {
        return entries.keySet();
    }

    boolean contains(String name) {
        return entries.containsKey(name);
    }

    /** The bytes of entry {@code name}, as a view of the mapping. */
    MemorySegment data(String name) {
        Entry entry = entries.get(name);
        if (entry == null) throw new ModelLoadException(file, "zip archive has no entry " + name);
        if (entry.method != METHOD_STORED) {
            throw new ModelLoadException(file, "zip entry " + name + " is compressed (method " + entry.method
                    + "); torch.save writes entries uncompressed, so this file was repacked: re-save it with "
                    + "torch.save or convert it to safetensors");
        }
        try {
            if (mapped.get(U32, entry.localHeader) != LOCAL_HEADER) {
                throw new ModelLoadException(file, "malformed zip archive: no local header for entry " + name);
            }
            long start = entry.localHeader + 30 + u16(entry.localHeader + 26) + u16(entry.localHeader + 28);
            return mapped.asSlice(start, entry.size);
        } catch (IndexOutOfBoundsException e) {
            throw new ModelLoadException(file, "zip entry " + name + " extends past the end of the file (truncated?)");
        }
    }

    private static Map<String, Entry> readDirectory(Path file, MemorySegment m) {
        long end = findEndOfDirectory(file, m);
        long count = Short.toUnsignedLong(m.get(U16, end + 10));
        long directory = Integer.toUnsignedLong(m.get(U32, end + 16));
        long locator = end - 20;
        if (locator >= 0 && m.get(U32, locator) == ZIP64_LOCATOR) {
            long end64 = m.get(U64, locator + 8);
            if (m.get(U32, end64) != ZIP64_END_OF_DIRECTORY) {
                throw new ModelLoadException(file, "malformed zip archive: bad ZIP64 end of central directory");
            }
            count = m.get(U64, end64 + 32);
            directory = m.get(U64, end64 + 48);
        }
        Map<String, Entry> entries = new LinkedHashMap<>();
        long at = directory;
        for (long i = 0; i < count; i++) {
            if (m.get(U32, at) != DIRECTORY_ENTRY) {
                throw new ModelLoadException(file, "malformed zip archive: bad central directory entry " + i);
            }
            int method = Short.toUnsignedInt(m.get(U16, at + 10));
            long compressed = Integer.toUnsignedLong(m.get(U32, at + 20));
            long size = Integer.toUnsignedLong(m.get(U32, at + 24));
            int nameLength = Short.toUnsignedInt(m.get(U16, at + 28));
            int extraLength = Short.toUnsignedInt(m.get(U16, at + 30));
            int commentLength = Short.toUnsignedInt(m.get(U16, at + 32));
            long localHeader = Integer.toUnsignedLong(m.get(U32, at + 42));
            String name = new String(m.asSlice(at + 46, nameLength).toArray(ValueLayout.JAVA_BYTE), StandardCharsets.UTF_8);
            // ZIP64 extra field: the 64-bit values, in this order, of exactly those fields that hold 0xFFFFFFFF.
            for (long x = at + 46 + nameLength; x + 4 <= at + 46 + nameLength + extraLength; ) {
                int id = Short.toUnsignedInt(m.get(U16, x));
                int length = Short.toUnsignedInt(m.get(U16, x + 2));
                if (id == ZIP64_EXTRA) {
                    long v = x + 4;
                    if (size == UNSET32) { size = m.get(U64, v); v += 8; }
                    if (compressed == UNSET32) { compressed = m.get(U64, v); v += 8; }
                    if (localHeader == UNSET32) localHeader = m.get(U64, v);
                }
                x += 4 + length;
            }
            entries.put(name, new Entry(method, method == METHOD_STORED ? size : compressed, localHeader));
            at += 46 + nameLength + extraLength + commentLength;
        }
        return entries;
    }

    /** The end-of-central-directory record sits in the last 22 bytes plus an archive comment of up to 64 KiB. */
    private static long findEndOfDirectory(Path file, MemorySegment m) {
        long size = m.byteSize();
        for (long at = size - 22; at >= Math.max(0, size - 22 - 0xFFFF); at--) {
            if (m.get(U32, at) == END_OF_DIRECTORY) return at;
        }
        throw new ModelLoadException(file, "not a zip archive (no end of central directory; truncated, or a "
                + "legacy pre-1.6 torch.save file: re-save it with a current PyTorch)");
    }

    private int u16(long offset) {
        return Short.toUnsignedInt(mapped.get(U16, offset));
    }
}
