package io.dejavu.engine.cuda;

import io.dejavu.model.DType;
import io.dejavu.model.OptConfig;
import io.dejavu.model.OptWeights;
import io.dejavu.model.Tensor;
import jcuda.Pointer;

import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.List;
import java.util.function.ToLongFunction;

/**
 * The model's weights on the GPU, all fp16 (bf16 and fp32 checkpoints converted while uploading). q, k and v
 * projections are stacked into one [3h][h] matrix so that one GEMV reads them. Addresses are 0 where the model has no
 * such tensor (no biases, no LayerNorm affine parameters, no projections, no final LayerNorm).
 */
final class DeviceWeights {
    /** One decoder layer; matrices [out][in] as in torch.nn.Linear. */
    record Layer(long attnNormGamma, long attnNormBeta, long qkvWeight, long qkvBias, long outWeight, long outBias,
                 long mlpNormGamma, long mlpNormBeta, long fc1Weight, long fc1Bias, long fc2Weight, long fc2Bias) {
    }

    final OptConfig config;
    final long embedTokens, embedPositions, projectIn, projectOut, finalNormGamma, finalNormBeta, lmHead;
    final List<Layer> layers;
    /** Bytes of weights one decode step reads: every layer's matrices and the lm_head (the bandwidth floor). */
    final long bytesPerStep;

    private DeviceWeights(OptConfig config, long embedTokens, long embedPositions, long projectIn, long projectOut,
                          long finalNormGamma, long finalNormBeta, long lmHead, List<Layer> layers) {
        this.config = config;
        this.embedTokens = embedTokens;
        this.embedPositions = embedPositions;
        this.projectIn = projectIn;
        this.projectOut = projectOut;
        this.finalNormGamma = finalNormGamma;
        this.finalNormBeta = finalNormBeta;
        this.lmHead = lmHead;
        this.layers = layers;
        long h = config.hiddenSize(), f = config.ffnDim(), p = config.wordEmbedProjDim();
        long perLayer = 4 * h * h + 2 * h * f;
        bytesPerStep = 2 * (config.numHiddenLayers() * perLayer + (long) config.vocabSize() * p
                + (config.hasProjections() ? 2 * h * p : 0));
    }

    /** Uploads a checkpoint's weights. */
    static DeviceWeights upload(CudaContext cuda, OptWeights w) {
        OptConfig c = w.config();
        Uploader up = new Uploader(cuda);
        long embed = up.tensor(w.embedTokens());
        long head = w.lmHead() == w.embedTokens() ? embed : up.tensor(w.lmHead());
        List<Layer> layers = new ArrayList<>();
        for (int i = 0; i < w.layers().size(); i++) {
            OptWeights.Layer l = w.layers().get(i);
            System.err.printf("\r[cuda] uploading layer %d/%d", i + 1, w.layers().size());
            layers.add(new Layer(
                    up.tensor(l.attnLayerNormWeight()), up.tensor(l.attnLayerNormBias()),
                    up.stacked("layer " + i + " qkv weight", l.qWeight(), l.kWeight(), l.vWeight()),
                    l.qBias() == null ? 0 : up.stacked("layer " + i + " qkv bias", l.qBias(), l.kBias(), l.vBias()),
                    up.tensor(l.outWeight()), up.tensor(l.outBias()),
                    up.tensor(l.mlpLayerNormWeight()), up.tensor(l.mlpLayerNormBias()),
                    up.tensor(l.fc1Weight()), up.tensor(l.fc1Bias()),
                    up.tensor(l.fc2Weight()), up.tensor(l.fc2Bias())));
        }
        System.err.println();
        cuda.synchronize();
        return new DeviceWeights(c, embed, up.tensor(w.embedPositions()), up.tensor(w.projectIn()),
                up.tensor(w.projectOut()), up.tensor(w.finalLayerNormWeight()), up.tensor(w.finalLayerNormBias()),
                head, List.copyOf(layers));
    }

    /**
     * Pseudo-random weights of a config's shapes made on the GPU (the benchmark's: speed depends only on shapes).
     * Matrices uniform in ±1/sqrt(in), biases ±0.02, LayerNorm gamma 1 and beta 0, so activations stay finite.
     */
    static DeviceWeights random(CudaContext cuda, DecoderKernels kernels, OptConfig c, int seed) {
        int[] next = {seed};
        long h = c.hiddenSize(), f = c.ffnDim(), p = c.wordEmbedProjDim(), v = c.vocabSize();
        ToLongFunction<long[]> matrix = shape -> {
            long n = shape[0] * shape[1];
            DeviceMemory m = cuda.alloc(2 * n, "random weight " + shape[0] + "x" + shape[1]);
            kernels.fillRandom(m.address(), n, next[0]++, (float) (1 / Math.sqrt(shape[1])));
            return m.address();
        };
        ToLongFunction<Long> bias = n -> {
            if (!c.enableBias()) return 0;
            DeviceMemory m = cuda.alloc(2 * n, "random bias");
            kernels.fillRandom(m.address(), n, next[0]++, 0.02f);
            return m.address();
        };
        ToLongFunction<Float> norm = value -> {
            if (!c.layerNormElementwiseAffine()) return 0;
            DeviceMemory m = cuda.alloc(2 * h, "layer norm");
            kernels.fill(m.address(), h, value);
            return m.address();
        };
        long embed = matrix.applyAsLong(new long[]{v, p});
        List<Layer> layers = new ArrayList<>();
        for (int i = 0; i < c.numHiddenLayers(); i++) {
            layers.add(new Layer(norm.applyAsLong(1f), norm.applyAsLong(0f),
                    matrix.applyAsLong(new long[]{3 * h, h}), bias.applyAsLong(3 * h),
                    matrix.applyAsLong(new long[]{h, h}), bias.applyAsLong(h),
                    norm.applyAsLong(1f), norm.applyAsLong(0f),
                    matrix.applyAsLong(new long[]{f, h}), bias.applyAsLong(f),
                    matrix.applyAsLong(new long[]{h, f}), bias.applyAsLong(h)));
        }
        boolean proj = c.hasProjections(), fin = c.hasFinalLayerNorm();
        long positions = matrix.applyAsLong(new long[]{c.maxPositionEmbeddings() + OptConfig.POSITION_OFFSET, h});
        long head = c.tieWordEmbeddings() ? embed : matrix.applyAsLong(new long[]{v, p});
        DeviceWeights w = new DeviceWeights(c, embed, positions,
                proj ? matrix.applyAsLong(new long[]{h, p}) : 0, proj ? matrix.applyAsLong(new long[]{p, h}) : 0,
                fin ? norm.applyAsLong(1f) : 0, fin ? norm.applyAsLong(0f) : 0, head, List.copyOf(layers));
        cuda.synchronize();
        return w;
    }

    /** Copies tensors to the GPU as fp16 through one pinned staging buffer. */
    private static final class Uploader {
        private static final long STAGE = 64L << 20;
        private final CudaContext cuda;
        private final ByteBuffer stage = ByteBuffer.allocateDirect((int) STAGE).order(ByteOrder.LITTLE_ENDIAN);

        Uploader(CudaContext cuda) {
            this.cuda = cuda;
        }

        long tensor(Tensor t) {
            if (t == null) return 0;
            DeviceMemory m = cuda.alloc(2 * t.elementCount(), "weight " + t.name());
            copy(t, m, 0);
            return m.address();
        }

        long stacked(String what, Tensor... parts) {
            long n = 0;
            for (Tensor t : parts) n += t.elementCount();
            DeviceMemory m = cuda.alloc(2 * n, what);
            long offset = 0;
            for (Tensor t : parts) {
                copy(t, m, offset);
                offset += 2 * t.elementCount();
            }
            return m.address();
        }

        private void copy(Tensor t, DeviceMemory dst, long offset) {
            long n = t.elementCount();
            MemorySegment src = t.data();
            for (long start = 0; start < n; start += STAGE / 2) {
                long count = Math.min(STAGE / 2, n - start);
                stage.clear();
                if (t.dtype() == DType.F16) {
                    MemorySegment.ofBuffer(stage).copyFrom(src.asSlice(2 * start, 2 * count));
                } else {
                    for (long i = 0; i < count; i++) {
                        stage.putShort((int) (2 * i), Float.floatToFloat16(t.dtype().get(src, start + i)));
                    }
                }
                // A synchronous copy: the staging buffer is reused right after.
                cuda.synchronize();
                jcuda.driver.JCudaDriver.cuMemcpyHtoD(dst.ptr(offset + 2 * start), Pointer.to(stage), 2 * count);
            }
        }
    }

}
