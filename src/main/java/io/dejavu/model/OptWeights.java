package io.dejavu.model;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * The tensors of an OPT checkpoint under their roles, each checked against the shape the config implies.
 * Accepts both key layouts of the published repos: {@code model.decoder.*} with {@code lm_head.weight}
 * (opt-125m, 1.3b, 2.7b, 66b) and {@code decoder.*} without it (opt-6.7b, 13b, 30b), where the head is tied.
 * Optional tensors (biases when enable_bias is false, LayerNorm affine parameters, projections) are null when the
 * config says the model has none.
 */
public record OptWeights(
        OptConfig config,
        Tensor embedTokens,
        Tensor embedPositions,
        Tensor projectIn,
        Tensor projectOut,
        Tensor finalLayerNormWeight,
        Tensor finalLayerNormBias,
        Tensor lmHead,
        List<Layer> layers) {

    /** One decoder layer; linear weights are [out, in] as in torch.nn.Linear. */
    public record Layer(
            Tensor attnLayerNormWeight, Tensor attnLayerNormBias,
            Tensor qWeight, Tensor qBias,
            Tensor kWeight, Tensor kBias,
            Tensor vWeight, Tensor vBias,
            Tensor outWeight, Tensor outBias,
            Tensor mlpLayerNormWeight, Tensor mlpLayerNormBias,
            Tensor fc1Weight, Tensor fc1Bias,
            Tensor fc2Weight, Tensor fc2Bias) {
    }

    public static OptWeights of(OptConfig config, Checkpoint checkpoint) {
        return new Resolver(config, checkpoint).resolve();
    }

    private static final class Resolver {
        private final OptConfig c;
        private final Checkpoint checkpoint;
        private final String prefix;

        Resolver(OptConfig config, Checkpoint checkpoint) {
            this.c = config;
            this.checkpoint = checkpoint;
            if (checkpoint.find("model.decoder.embed_tokens.weight") != null) prefix = "model.decoder.";
            else if (checkpoint.find("decoder.embed_tokens.weight") != null) prefix = "decoder.";
            else throw new ModelLoadException(checkpoint.directory(), "not an OPT checkpoint: no tensor "
                    + "model.decoder.embed_tokens.weight or decoder.embed_tokens.weight among " + sample(checkpoint));
        }

        OptWeights resolve() {
            int h = c.hiddenSize(), f = c.ffnDim(), p = c.wordEmbedProjDim();
            Tensor embed = required("embed_tokens.weight", c.vocabSize(), p);
            Tensor head = checkpoint.find("lm_head.weight");
            if (head != null) checkShape(head, c.vocabSize(), p);
            else head = embed;
            List<Layer> layers = new ArrayList<>();
            for (int i = 0; i < c.numHiddenLayers(); i++) {
                String l = "layers." + i + ".";
                layers.add(new Layer(
                        norm(l + "self_attn_layer_norm.weight"), norm(l + "self_attn_layer_norm.bias"),
                        required(l + "self_attn.q_proj.weight", h, h), bias(l + "self_attn.q_proj.bias", h),
                        required(l + "self_attn.k_proj.weight", h, h), bias(l + "self_attn.k_proj.bias", h),
                        required(l + "self_attn.v_proj.weight", h, h), bias(l + "self_attn.v_proj.bias", h),
                        required(l + "self_attn.out_proj.weight", h, h), bias(l + "self_attn.out_proj.bias", h),
                        norm(l + "final_layer_norm.weight"), norm(l + "final_layer_norm.bias"),
                        required(l + "fc1.weight", f, h), bias(l + "fc1.bias", f),
                        required(l + "fc2.weight", h, f), bias(l + "fc2.bias", h)));
            }
            boolean proj = c.hasProjections();
            boolean finalNorm = c.hasFinalLayerNorm();
            return new OptWeights(c, embed,
                    required("embed_positions.weight", c.maxPositionEmbeddings() + OptConfig.POSITION_OFFSET, h),
                    proj ? required("project_in.weight", h, p) : null,
                    proj ? required("project_out.weight", p, h) : null,
                    finalNorm ? norm("final_layer_norm.weight") : null,
                    finalNorm ? norm("final_layer_norm.bias") : null,
                    head, List.copyOf(layers));
        }

        private Tensor norm(String name) {
            return c.layerNormElementwiseAffine() ? required(name, c.hiddenSize()) : null;
        }

        private Tensor bias(String name, long size) {
            return c.enableBias() ? required(name, size) : null;
        }

        private Tensor required(String name, long... shape) {
            Tensor t = checkpoint.find(prefix + name);
            if (t == null) {
                throw new ModelLoadException(checkpoint.directory(), "missing tensor " + prefix + name
                        + " (expected shape " + Arrays.toString(shape) + ")");
            }
            checkShape(t, shape);
            return t;
        }

        private void checkShape(Tensor t, long... shape) {
            if (!Arrays.equals(t.shape(), shape)) {
                throw new ModelLoadException(t.source(), "tensor " + t.name() + " has shape " + t.shapeString()
                        + " but config.json implies " + Arrays.toString(shape));
            }
        }

        private static String sample(Checkpoint checkpoint) {
            return checkpoint.names().stream().limit(5).toList() + (checkpoint.names().size() > 5 ? "..." : "");
        }
    }
}
