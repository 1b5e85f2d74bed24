package io.dejavu.model;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.channels.FileChannel;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

/** Read-only mappings of checkpoint files: tensors are views into them, so weights never land on the Java heap. */
final class MappedFile {
    private MappedFile() {
    }

    /** All of {@code file}, mapped read-only until {@code arena} closes. */
    static MemorySegment map(Path file, Arena arena) {
        try (FileChannel channel = FileChannel.open(file, StandardOpenOption.READ)) {
            return channel.map(FileChannel.MapMode.READ_ONLY, 0, channel.size(), arena);
        } catch (NoSuchFileException e) {
            throw new ModelLoadException(file, "file not found");
        } catch (IOException e) {
            throw new ModelLoadException(file, "cannot read: " + e.getMessage(), e);
        }
    }
}
