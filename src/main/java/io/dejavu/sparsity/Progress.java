package io.dejavu.sparsity;

import java.io.PrintStream;

/** A progress bar with an ETA on one terminal line of stderr, redrawn at most a few times a second. */
public final class Progress {
    private static final int WIDTH = 30;
    private final PrintStream out;
    private final String label;
    private final long total;
    private final long start = System.nanoTime();
    private long done, lastDraw;

    public Progress(PrintStream out, String label, long total) {
        this.out = out;
        this.label = label;
        this.total = Math.max(1, total);
    }

    public synchronized void advance(long units, String detail) {
        done = Math.min(total, done + units);
        long now = System.nanoTime();
        if (done < total && now - lastDraw < 250_000_000L) return;
        lastDraw = now;
        double share = (double) done / total, elapsed = (now - start) / 1e9;
        int filled = (int) (share * WIDTH);
        String eta = done == 0 ? "?" : time(elapsed / share - elapsed);
        out.printf("\r%-9s [%s%s] %3d%% %s elapsed %s, ETA %s   ", label, "=".repeat(filled), " ".repeat(WIDTH - filled),
                (int) (share * 100), detail, time(elapsed), eta);
        if (done == total) out.println();
        out.flush();
    }

    private static String time(double seconds) {
        long s = Math.round(seconds);
        return String.format("%d:%02d", s / 60, s % 60);
    }
}
