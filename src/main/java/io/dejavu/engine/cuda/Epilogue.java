package io.dejavu.engine.cuda;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * What a GEMV/GEMM does with each dot product (struct Epilogue in decoder.cu, passed by value):
 * {@code v = acc + bias; relu; + residual}, stored fp32 or fp16; or, for the fused QKV projection, queries to
 * {@code outF16} and keys/values into the paged cache at each token's slot. With row-gathered weights, outIndex
 * names the column each computed row belongs to, or biasIndex the bias element of each row when the output stays
 * compact. Addresses are 0 when absent.
 */
record Epilogue(long bias, long residual, long outF32, long outF16, long kCache, long vCache, long slots,
                long outIndex, long biasIndex, int ld, boolean relu, int heads, int headDim, int hidden) {

    static Epilogue f32(long bias, long residual, long out, int ld) {
        return new Epilogue(bias, residual, out, 0, 0, 0, 0, 0, 0, ld, false, 0, 0, 0);
    }

    static Epilogue f16(long bias, boolean relu, long out, int ld) {
        return new Epilogue(bias, 0, 0, out, 0, 0, 0, 0, 0, ld, relu, 0, 0, 0);
    }

    static Epilogue qkv(long bias, long queries, long kCache, long vCache, long slots, int heads, int headDim) {
        int hidden = heads * headDim;
        return new Epilogue(bias, 0, 0, queries, kCache, vCache, slots, 0, 0, hidden, false, heads, headDim, hidden);
    }

    /**
     * relu(v + bias[rowIndex[n]]) into out[m][n] (fp32): the selected neurons of the sparse MLP's first half, whose
     * weight rows were gathered by rowIndex, kept in the compact order of the selection.
     */
    static Epilogue gatheredRelu(long bias, long rowIndex, long out, int ld) {
        return new Epilogue(bias, 0, out, 0, 0, 0, 0, 0, rowIndex, ld, true, 0, 0, 0);
    }

    /** The same, for weights whose rows were gathered by {@code rowIndex}: row n's result goes to column rowIndex[n]. */
    Epilogue scatteredBy(long rowIndex) {
        return new Epilogue(bias, residual, outF32, outF16, kCache, vCache, slots, rowIndex, biasIndex, ld, relu,
                heads, headDim, hidden);
    }

    byte[] bytes() {
        ByteBuffer b = ByteBuffer.allocate(96).order(ByteOrder.nativeOrder());
        b.putLong(bias).putLong(residual).putLong(outF32).putLong(outF16).putLong(kCache).putLong(vCache)
                .putLong(slots).putLong(outIndex).putLong(biasIndex);
        b.putInt(ld).putInt(relu ? 1 : 0).putInt(heads).putInt(headDim).putInt(hidden).putInt(0);
        return b.array();
    }
}
