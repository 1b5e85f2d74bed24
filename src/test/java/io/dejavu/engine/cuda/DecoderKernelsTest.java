package io.dejavu.engine.cuda;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;

/** The split-K rule of the Hopper GEMM on the shapes it was measured on (264 block slots: an H100/H200). */
class DecoderKernelsTest {
    private static final int SLOTS = 264;

    @Test
    void splitsTheGemmsOfAPromptThatLeaveTheGpuPartEmpty() {
        // 512 tokens: 4 row tiles; out_proj / fc2 of opt-6.7b (N = 4096) and opt-13b (N = 5120)
        assertEquals(2, DecoderKernels.kSplits(4 * 32, 64, SLOTS));
        assertEquals(2, DecoderKernels.kSplits(4 * 32, 256, SLOTS));
        assertEquals(3, DecoderKernels.kSplits(4 * 40, 80, SLOTS));
        assertEquals(3, DecoderKernels.kSplits(4 * 40, 320, SLOTS));
    }

    @Test
    void leavesGemmsWithEnoughTilesOrTooShortAKAlone() {
        assertEquals(1, DecoderKernels.kSplits(4 * 96, 64, SLOTS));   // opt-6.7b qkv: no saving worth a reduce
        assertEquals(1, DecoderKernels.kSplits(4 * 160, 80, SLOTS));  // opt-13b fc1
        assertEquals(1, DecoderKernels.kSplits(4, 4, SLOTS));         // K of 4 tiles: parts would be too short
        assertEquals(4, DecoderKernels.kSplits(6, 16, SLOTS));        // a small model's fc2: split as far as allowed
    }
}
