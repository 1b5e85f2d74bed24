package io.dejavu.cli;

import io.dejavu.engine.cuda.CudaBenchmark;
import io.dejavu.engine.cuda.CudaEngine;
import io.dejavu.engine.cuda.GpuOutOfMemoryException;
import io.dejavu.engine.cuda.SparseBenchmark;
import io.dejavu.model.ModelLoadException;
import io.dejavu.model.OptConfig;

import java.nio.file.Path;
import java.util.List;

/**
 * `dejavu bench --backend cuda`: decode and prefill speed of the CUDA backend on random fp16 weights made on the GPU
 * for a named OPT shape or a model directory's config.json, against the bandwidth floor; with --sparse, Deja Vu
 * decoding next to dense decoding of the same engine.
 */
final class GpuBench {
    private GpuBench() {
    }

    static int run(BenchCommand o) {
        String unavailable = CudaEngine.unavailableReason();
        if (unavailable != null) throw new IllegalStateException("the cuda backend is not available: " + unavailable);
        if (o.shape == null) throw new IllegalArgumentException("--backend cuda needs --shape (" + CudaBenchmark.NAMED_SHAPES
                + ", or a model directory)");
        OptConfig config = CudaBenchmark.namedShape(o.shape);
        if (config == null) {
            try {
                config = OptConfig.read(Path.of(o.shape));
            } catch (ModelLoadException e) {
                throw new IllegalArgumentException("--shape " + o.shape + " is neither a named shape ("
                        + CudaBenchmark.NAMED_SHAPES + ") nor a model directory: " + e.getMessage());
            }
        }
        List<Integer> batches = o.batches != null ? o.batches : List.of(1);
        int promptLen = o.promptLen != null ? o.promptLen : 512;
        try {
            if (o.sparse) {
                if (!(o.mlpKeep > 0 && o.mlpKeep <= 1 && o.headsKeep > 0 && o.headsKeep <= 1)) {
                    throw new IllegalArgumentException("--mlp-keep and --heads-keep must be in (0, 1]");
                }
                int rank = o.rank != null ? o.rank : config.hiddenSize() / 8;
                List<SparseBenchmark.Point> points = SparseBenchmark.run(o.shape, config,
                        batches.stream().mapToInt(Integer::intValue).toArray(), promptLen, o.genLen, rank, o.mlpKeep,
                        o.headsKeep, o.sweep, o.profile, o.seed, System.out);
                for (SparseBenchmark.Point p : points) System.out.println(p.result(o.shape, rank));
                return 0;
            }
            for (int batch : batches) {
                System.out.print(CudaBenchmark.run(o.shape, config, batch, promptLen, o.genLen, o.seed, o.profile,
                        !o.noDependentLaunch).table());
            }
            return 0;
        } catch (GpuOutOfMemoryException e) {
            throw new IllegalStateException(e.getMessage(), e);
        }
    }
}
