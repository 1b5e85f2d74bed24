package io.dejavu.server;

import io.dejavu.config.ServiceConfig;
import io.dejavu.model.ModelLoadException;
import io.dejavu.model.OptConfig;
import io.dejavu.sparsity.Predictors;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

/**
 * The contextual-sparsity predictors the sparsity settings ask for, at their operating point: "auto" loads
 * MODEL_DIR/dejavu when it holds predictors (else the server runs dense only), "dense" loads none, any other value
 * names a predictors directory that must load.
 *
 * @param predictors null when the server runs dense only
 * @param source     where they came from and their operating point, or why there are none, for the start-up log
 */
record SparsitySetup(Predictors predictors, String source) {
    /**
     * @throws IllegalStateException when predictors that the settings require cannot be read, or an override is
     *                               out of range, with the reason
     */
    static SparsitySetup load(ServiceConfig config, OptConfig model) {
        String setting = config.sparsity();
        if (setting.equals(ServiceConfig.SPARSITY_DENSE)) return new SparsitySetup(null, "off (sparsity = dense)");
        Path dir = setting.equals(ServiceConfig.SPARSITY_AUTO) ? config.model().resolve(Predictors.MODEL_SUBDIRECTORY) : Path.of(setting);
        if (setting.equals(ServiceConfig.SPARSITY_AUTO) && !Files.isRegularFile(dir.resolve(Predictors.SETTINGS))) {
            return new SparsitySetup(null, "off (no predictors in " + dir + "; run `dejavu calibrate`)");
        }
        try {
            int layers = model.numHiddenLayers();
            Predictors p = Predictors.read(dir, model).withOperatingPoint(
                    Predictors.perLayer("setting 'sparse_mlp_k'", ints(config.sparseMlpK()), layers, model.ffnDim()),
                    Predictors.perLayer("setting 'sparse_heads_keep'", ints(config.sparseHeadsKeep()), layers,
                            model.numAttentionHeads()));
            return new SparsitySetup(p, dir + describe(p, config));
        } catch (ModelLoadException | IllegalArgumentException e) {
            throw new IllegalStateException("sparsity predictors: " + e.getMessage(), e);
        }
    }

    private static int[] ints(List<Integer> values) {
        return values.isEmpty() ? null : values.stream().mapToInt(Integer::intValue).toArray();
    }

    /** The operating point and its origin: " (MLP: calibrated threshold in every layer; heads kept: 4 in every layer; ...)". */
    private static String describe(Predictors p, ServiceConfig config) {
        List<String> mlp = p.layers().stream()
                .map(layer -> layer.mlpByThreshold() ? "calibrated threshold" : "top " + layer.mlpK()).toList();
        List<String> heads = p.layers().stream().map(layer -> Integer.toString(layer.headsKeep())).toList();
        String origin = config.sparseMlpK().isEmpty() && config.sparseHeadsKeep().isEmpty()
                ? Predictors.SETTINGS : "sparse_mlp_k/sparse_heads_keep";
        return " (MLP: " + perLayer(mlp) + "; heads kept: " + perLayer(heads) + "; operating point from " + origin + ")";
    }

    /** One value when every layer has it, else the values in layer order. */
    private static String perLayer(List<String> values) {
        return values.stream().distinct().count() == 1 ? values.getFirst() + " in every layer"
                : "per layer " + String.join(",", values);
    }
}
