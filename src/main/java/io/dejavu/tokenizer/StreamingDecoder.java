package io.dejavu.tokenizer;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;

/**
 * Turns generated ids into text one at a time. A token may end inside a multi-byte UTF-8 character; those bytes are
 * held back until the character completes, so the pieces never split a character and concatenate to
 * {@link Tokenizer#decode}'s text. Not thread-safe: one per generated sequence.
 */
public final class StreamingDecoder {
    private final Tokenizer tokenizer;
    private final ByteArrayOutputStream pending = new ByteArrayOutputStream();

    StreamingDecoder(Tokenizer tokenizer) {
        this.tokenizer = tokenizer;
    }

    /** The text newly completed by this token; empty while a character is still incomplete. */
    public String append(int id) {
        tokenizer.appendBytes(id, pending);
        byte[] bytes = pending.toByteArray();
        int complete = bytes.length - incompleteTailLength(bytes);
        pending.reset();
        pending.write(bytes, complete, bytes.length - complete);
        return new String(bytes, 0, complete, StandardCharsets.UTF_8);
    }

    /** What is still held back at the end of the sequence; bytes that never formed a character become U+FFFD. */
    public String flush() {
        String rest = pending.toString(StandardCharsets.UTF_8);
        pending.reset();
        return rest;
    }

    /**
     * Length of the trailing bytes that start a UTF-8 character which further bytes could still complete;
     * 0 when the buffer ends on a character boundary or with bytes that can never become valid.
     */
    static int incompleteTailLength(byte[] bytes) {
        int end = bytes.length;
        for (int tail = 1; tail <= Math.min(3, end); tail++) {
            int b = bytes[end - tail] & 0xFF;
            if ((b & 0xC0) == 0x80) continue; // continuation byte: the lead is further back
            int needed = b >= 0xC2 && b <= 0xDF ? 2 : b >= 0xE0 && b <= 0xEF ? 3 : b >= 0xF0 && b <= 0xF4 ? 4 : 0;
            if (needed <= tail || !validSecondByte(b, bytes, end - tail + 1, end)) return 0;
            return tail;
        }
        return 0;
    }

    /** The second byte of E0, ED, F0 and F4 sequences is restricted (no overlong forms, surrogates or > U+10FFFF). */
    private static boolean validSecondByte(int lead, byte[] bytes, int at, int end) {
        if (at >= end) return true;
        int second = bytes[at] & 0xFF;
        return switch (lead) {
            case 0xE0 -> second >= 0xA0;
            case 0xED -> second <= 0x9F;
            case 0xF0 -> second >= 0x90;
            case 0xF4 -> second <= 0x8F;
            default -> true;
        };
    }
}
