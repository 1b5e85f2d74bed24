package io.dejavu.hub;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;

/**
 * The hub cache layout of huggingface_hub, so that a cache filled by Python serves here and the other way round:
 * {@code models--<org>--<name>/refs/main} holds the commit, {@code blobs/<etag>} the file contents (the etag is the
 * sha256 of LFS files, the git blob id of others) and {@code snapshots/<commit>/<file>} a relative link to the blob.
 */
final class HubCache {
    private final Path root;

    HubCache(Path root) {
        this.root = root;
    }

    Path root() {
        return root;
    }

    Path repository(String modelId) {
        return root.resolve("models--" + modelId.replace("/", "--"));
    }

    /** The commit refs/main points to, or null when the model was never fetched. */
    String mainCommit(String modelId) {
        Path ref = repository(modelId).resolve("refs").resolve("main");
        try {
            return Files.isRegularFile(ref) ? Files.readString(ref).strip() : null;
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + ref, e);
        }
    }

    void setMainCommit(String modelId, String commit) throws IOException {
        Path ref = repository(modelId).resolve("refs").resolve("main");
        Files.createDirectories(ref.getParent());
        Files.writeString(ref, commit);
    }

    Path snapshot(String modelId, String commit) {
        return repository(modelId).resolve("snapshots").resolve(commit);
    }

    Path blob(String modelId, String etag) {
        return repository(modelId).resolve("blobs").resolve(etag);
    }

    /** The partial download of a blob, kept between attempts so that the next one resumes it. */
    Path incomplete(String modelId, String etag) {
        return repository(modelId).resolve("blobs").resolve(etag + ".incomplete");
    }

    /** Makes {@code file} of the snapshot a relative link to its blob, or a copy where links are not allowed. */
    void link(String modelId, String commit, String file, String etag) throws IOException {
        Path link = snapshot(modelId, commit).resolve(file);
        Path blob = blob(modelId, etag);
        Files.createDirectories(link.getParent());
        Files.deleteIfExists(link);
        try {
            Files.createSymbolicLink(link, link.getParent().relativize(blob));
        } catch (UnsupportedOperationException | IOException e) {
            Files.copy(blob, link, StandardCopyOption.REPLACE_EXISTING);
        }
    }
}
