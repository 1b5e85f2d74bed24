package io.dejavu.engine.cuda;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * What a GEMV/GEMM does with each dot product (struct Epilogue in decoder.cu, passed by value):
 * {@code v = acc + bias; relu; + residual}, stored fp32 or fp16; or, for the fused QKV projection, queries to
 * {@code outF16} and keys/values into the paged cache at each token's slot. Addresses are 0 when absent.
 */
record Epilogue(long bias, long residual, long outF32, long outF16, long kCache, long vCache, long slots,
                int ld, boolean relu, int heads, int headDim, int hidden) {

    static Epilogue f32(long bias, long residual, long out, int ld) {
        return new Epilogue(bias, residual, out, 0, 0, 0, 0, ld, false, 0, 0, 0);
    }

    static Epilogue f16(long bias, boolean relu, long out, int ld) {
        return new Epilogue(bias, 0, 0, out, 0, 0, 0, ld, relu, 0, 0, 0);
    }

    static Epilogue qkv(long bias, long queries, long kCache, long vCache, long slots, int heads, int headDim) {
        int hidden = heads * headDim;
        return new Epilogue(bias, 0, 0, queries, kCache, vCache, slots, hidden, false, heads, headDim, hidden);
    }

    byte[] bytes() {
        ByteBuffer b = ByteBuffer.allocate(80).order(ByteOrder.nativeOrder());
        b.putLong(bias).putLong(residual).putLong(outF32).putLong(outF16).putLong(kCache).putLong(vCache)
                .putLong(slots);
        b.putInt(ld).putInt(relu ? 1 : 0).putInt(heads).putInt(headDim).putInt(hidden).putInt(0);
        return b.array();
    }
}
