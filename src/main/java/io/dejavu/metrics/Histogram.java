package io.dejavu.metrics;

import java.util.Arrays;
import java.util.concurrent.atomic.DoubleAdder;
import java.util.concurrent.atomic.LongAdder;

/** A Prometheus histogram with fixed bucket bounds, safe to observe from any thread. */
public final class Histogram {
    private final String name;
    private final String help;
    private final double[] bounds;
    private final LongAdder[] counts;
    private final LongAdder count = new LongAdder();
    private final DoubleAdder sum = new DoubleAdder();

    public Histogram(String name, String help, double... bounds) {
        this.name = name;
        this.help = help;
        this.bounds = bounds.clone();
        Arrays.sort(this.bounds);
        this.counts = new LongAdder[bounds.length];
        Arrays.setAll(counts, i -> new LongAdder());
    }

    public void observe(double value) {
        int bucket = Arrays.binarySearch(bounds, value);
        // Buckets are cumulative when written; here each value counts once, in the first bucket that holds it.
        if (bucket < 0) bucket = -bucket - 1;
        if (bucket < bounds.length) counts[bucket].increment();
        count.increment();
        sum.add(value);
    }

    public long count() {
        return count.sum();
    }

    void write(StringBuilder out) {
        out.append("# HELP ").append(name).append(' ').append(help).append('\n');
        out.append("# TYPE ").append(name).append(" histogram\n");
        long cumulative = 0;
        for (int i = 0; i < bounds.length; i++) {
            cumulative += counts[i].sum();
            out.append(name).append("_bucket{le=\"").append(bounds[i]).append("\"} ").append(cumulative).append('\n');
        }
        // Observations that arrive while this is written may show in the buckets before the count.
        long total = Math.max(cumulative, count.sum());
        out.append(name).append("_bucket{le=\"+Inf\"} ").append(total).append('\n');
        out.append(name).append("_sum ").append(sum.sum()).append('\n');
        out.append(name).append("_count ").append(total).append('\n');
    }
}
