package io.dejavu.engine.cuda;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The split-K rule of the Hopper GEMM on the shapes it was measured on (264 block slots: an H100/H200), and which
 * decode attention kernel takes which head width.
 */
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

    @Test
    void givesEachHeadWidthTheAttentionKernelWhoseRowLanesCoverIt() {
        assertEquals("attention_v8_r1", DecoderKernels.attentionKernel(8));     // opt-tiny-preln
        assertEquals("attention_v2_r8", DecoderKernels.attentionKernel(12));    // opt-tiny-postln-proj: 2-half loads
        assertEquals("attention_v8_r8", DecoderKernels.attentionKernel(64));    // opt-125m .. opt-1.3b, opt-mini
        assertEquals("attention_v8_r16", DecoderKernels.attentionKernel(80));   // opt-2.7b: 10 of 16 lanes busy
        assertEquals("attention_v8_r16", DecoderKernels.attentionKernel(128));  // opt-6.7b and larger
        assertEquals("attention_v8_r32", DecoderKernels.attentionKernel(256));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> DecoderKernels.attentionKernel(264));
        assertTrue(e.getMessage().contains("264"), e.getMessage());
    }
}
