package io.dejavu.api;

import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.List;

/**
 * The accepted Bearer keys. Keys are compared as SHA-256 digests with {@link MessageDigest#isEqual}, which takes
 * the same time wherever the first difference is, and every key is tried, so the timing tells nothing about how
 * close a guess was nor which key matched.
 */
final class ApiKeys {
    private final List<byte[]> digests;

    ApiKeys(List<String> keys) {
        this.digests = keys.stream().map(ApiKeys::sha256).toList();
    }

    boolean required() {
        return !digests.isEmpty();
    }

    /** Whether an Authorization header value ("Bearer KEY") names an accepted key. */
    boolean accepts(String authorization) {
        if (authorization == null || !authorization.regionMatches(true, 0, "Bearer ", 0, 7)) return false;
        return acceptsKey(authorization.substring(7).strip());
    }

    boolean acceptsKey(String key) {
        if (key == null) return false;
        byte[] digest = sha256(key);
        boolean match = false;
        for (byte[] accepted : digests) match |= MessageDigest.isEqual(accepted, digest);
        return match;
    }

    private static byte[] sha256(String key) {
        try {
            return MessageDigest.getInstance("SHA-256").digest(key.getBytes(StandardCharsets.UTF_8));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("the JDK lacks SHA-256", e);
        }
    }
}
