package io.dejavu.generation;

import org.junit.jupiter.api.Test;

import java.util.List;

import static org.junit.jupiter.api.Assertions.*;

class StopSequenceBufferTest {
    @Test
    void aStopSequenceSplitOverThreeChunksIsHeldThenDropped() {
        StopSequenceBuffer buffer = new StopSequenceBuffer(List.of("END!"));
        assertEquals("Hello ", buffer.append("Hello E"));
        assertEquals("", buffer.append("N"));
        assertFalse(buffer.stopped());
        assertEquals("EN world", buffer.append(" world"), "a partial match that fails is released");
        assertEquals("", buffer.append("E"));
        assertEquals("", buffer.append("ND"));
        assertEquals("", buffer.append("!tail"));
        assertTrue(buffer.stopped());
        assertThrows(IllegalStateException.class, () -> buffer.append("more"));
    }

    @Test
    void textBeforeTheStopInTheSameChunkIsReleased() {
        StopSequenceBuffer buffer = new StopSequenceBuffer(List.of("\n\n"));
        assertEquals("line one", buffer.append("line one\n"));
        assertEquals("", buffer.append(""));
        assertEquals("", buffer.append("\nline two"));
        assertTrue(buffer.stopped());
    }

    @Test
    void aFailedPartialMatchIsReleasedButANewOneInsideItIsKept() {
        StopSequenceBuffer buffer = new StopSequenceBuffer(List.of("aab"));
        assertEquals("", buffer.append("a"));
        assertEquals("", buffer.append("a"));
        assertEquals("a", buffer.append("a"), "'aaa': only the last 'aa' can still start 'aab'");
        assertEquals("", buffer.append("b"));
        assertTrue(buffer.stopped());
    }

    @Test
    void theEarliestOfSeveralStopSequencesWins() {
        StopSequenceBuffer buffer = new StopSequenceBuffer(List.of("world", "lo"));
        assertEquals("Hel", buffer.append("Hello world"));
        assertTrue(buffer.stopped());
    }

    @Test
    void heldTextIsReleasedAtTheEnd() {
        StopSequenceBuffer buffer = new StopSequenceBuffer(List.of("###"));
        assertEquals("x", buffer.append("x##"));
        assertEquals("##", buffer.release());
        assertEquals("", buffer.release());
    }

    @Test
    void withoutStopSequencesEverythingPassesAtOnce() {
        StopSequenceBuffer buffer = new StopSequenceBuffer(List.of());
        assertEquals("abc", buffer.append("abc"));
        assertFalse(buffer.stopped());
    }
}
