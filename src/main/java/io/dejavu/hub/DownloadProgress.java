package io.dejavu.hub;

import java.io.PrintStream;
import java.util.Locale;

/** One line on stderr, redrawn in place: file, bytes done of total, transfer rate and time left. */
final class DownloadProgress {
    private static final long REDRAW_NANOS = 250_000_000L;

    private final PrintStream out;
    private final String label;
    private final long total;
    private final long resumedAt;
    private final long start = System.nanoTime();
    private long done;
    private long lastDrawn;

    /** {@code out} null draws nothing; {@code resumedAt} bytes were already on disk (they do not count in the rate). */
    DownloadProgress(PrintStream out, String label, long total, long resumedAt) {
        this.out = out;
        this.label = label;
        this.total = total;
        this.resumedAt = resumedAt;
        this.done = resumedAt;
    }

    void advance(long bytes) {
        done += bytes;
        long now = System.nanoTime();
        if (now - lastDrawn >= REDRAW_NANOS) {
            lastDrawn = now;
            draw(now, false);
        }
    }

    void finish() {
        draw(System.nanoTime(), true);
    }

    private void draw(long now, boolean last) {
        if (out == null) return;
        double seconds = Math.max((now - start) / 1e9, 1e-3);
        double rate = (done - resumedAt) / seconds;
        StringBuilder line = new StringBuilder("\r").append(label).append("  ").append(bytes(done));
        if (total > 0) line.append(" / ").append(bytes(total)).append(String.format(Locale.ROOT, " %3d%%", 100 * done / total));
        line.append("  ").append(bytes((long) rate)).append("/s");
        if (!last && total > 0 && rate > 0) line.append("  ETA ").append(duration((long) ((total - done) / rate)));
        if (last) line.append(String.format(Locale.ROOT, "  in %.1f s", seconds));
        out.print(line.append("\u001b[K").append(last ? "\n" : ""));
        out.flush();
    }

    static String bytes(long n) {
        if (n < 1024) return n + " B";
        String[] units = {"KiB", "MiB", "GiB", "TiB"};
        double v = n;
        int u = -1;
        while (v >= 1024 && u < units.length - 1) {
            v /= 1024;
            u++;
        }
        return String.format(Locale.ROOT, "%.1f %s", v, units[u]);
    }

    private static String duration(long seconds) {
        return seconds >= 3600 ? String.format(Locale.ROOT, "%d:%02d:%02d", seconds / 3600, seconds / 60 % 60, seconds % 60)
                : String.format(Locale.ROOT, "%d:%02d", seconds / 60, seconds % 60);
    }
}
