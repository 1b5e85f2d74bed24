package io.dejavu.generation;

import java.util.List;

/**
 * Streams generated text while watching for stop sequences. Text that could be the beginning of a stop sequence is
 * held back until the following text shows it is not; when a stop sequence completes, the text before it is released
 * and the rest is dropped.
 */
final class StopSequenceBuffer {
    private final List<String> stops;
    private final int longestStop;
    private final StringBuilder held = new StringBuilder();
    private boolean stopped;

    StopSequenceBuffer(List<String> stops) {
        this.stops = stops;
        this.longestStop = stops.stream().mapToInt(String::length).max().orElse(0);
    }

    /** Adds newly decoded text; returns the text that can be shown now. */
    String append(String text) {
        if (stopped) throw new IllegalStateException("a stop sequence already ended this text");
        if (stops.isEmpty()) return text;
        held.append(text);
        int stopAt = firstStop();
        if (stopAt >= 0) {
            stopped = true;
            String before = held.substring(0, stopAt);
            held.setLength(0);
            return before;
        }
        int keep = heldSuffixStart();
        String released = held.substring(0, keep);
        held.delete(0, keep);
        return released;
    }

    /** Whether a stop sequence has completed. */
    boolean stopped() {
        return stopped;
    }

    /** At the end of generation the held text is known not to start a stop sequence: returns and clears it. */
    String release() {
        String rest = held.toString();
        held.setLength(0);
        return rest;
    }

    /** Where the earliest complete stop sequence starts in the held text (the first listed on a tie), or -1. */
    private int firstStop() {
        int first = -1;
        for (String stop : stops) {
            int at = held.indexOf(stop);
            if (at >= 0 && (first < 0 || at < first)) first = at;
        }
        return first;
    }

    /** Start of the longest suffix of the held text that is a proper beginning of some stop sequence. */
    private int heldSuffixStart() {
        String text = held.toString();
        int length = text.length();
        for (int start = Math.max(0, length - longestStop + 1); start < length; start++) {
            int suffix = length - start;
            for (String stop : stops) {
                if (suffix < stop.length() && text.regionMatches(start, stop, 0, suffix)) return start;
            }
        }
        return length;
    }
}
