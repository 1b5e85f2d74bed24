package io.dejavu.tokenizer;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.IntConsumer;

/**
 * Applies BPE merges, lowest rank first, to one pre-tokenized word written in byte-level characters.
 * Words repeat a lot in natural text, so results are cached per word.
 */
final class BytePairEncoder {
    /** Bounds the cache's memory on adversarial input; real text stays far below it. */
    private static final int MAX_CACHED_WORDS = 100_000;

    private final Map<String, Integer> vocab;
    /** Rank of each merge, keyed by "left right" (byte-level tokens never contain a space). */
    private final Map<String, Integer> mergeRanks;
    /** Id used for a symbol missing from the vocabulary, or -1 to drop it as tokenizers' BPE does without unk_token. */
    private final int unknownId;
    private final Map<String, int[]> cache = new ConcurrentHashMap<>();

    BytePairEncoder(Map<String, Integer> vocab, Map<String, Integer> mergeRanks, int unknownId) {
        this.vocab = vocab;
        this.mergeRanks = mergeRanks;
        this.unknownId = unknownId;
    }

    void encode(String word, IntConsumer out) {
        int[] ids = cache.get(word);
        if (ids == null) {
            ids = merge(word);
            if (cache.size() >= MAX_CACHED_WORDS) cache.clear();
            cache.put(word, ids);
        }
        for (int id : ids) out.accept(id);
    }

    private int[] merge(String word) {
        List<String> symbols = new ArrayList<>(word.length());
        for (int i = 0; i < word.length(); i++) symbols.add(String.valueOf(word.charAt(i)));
        while (symbols.size() > 1) {
            int bestRank = Integer.MAX_VALUE;
            int bestAt = -1;
            for (int i = 0; i + 1 < symbols.size(); i++) {
                Integer rank = mergeRanks.get(symbols.get(i) + " " + symbols.get(i + 1));
                if (rank != null && rank < bestRank) {
                    bestRank = rank;
                    bestAt = i;
                }
            }
            if (bestAt < 0) break;
            String left = symbols.get(bestAt);
            String right = symbols.get(bestAt + 1);
            List<String> merged = new ArrayList<>(symbols.size());
            for (int i = 0; i < symbols.size(); i++) {
                if (i >= bestAt && i + 1 < symbols.size() && symbols.get(i).equals(left) && symbols.get(i + 1).equals(right)) {
                    merged.add(left + right);
                    i++;
                } else {
                    merged.add(symbols.get(i));
                }
            }
            symbols = merged;
        }
        int[] ids = new int[symbols.size()];
        int n = 0;
        for (String symbol : symbols) {
            Integer id = vocab.get(symbol);
            if (id != null) ids[n++] = id;
            else if (unknownId >= 0) ids[n++] = unknownId;
        }
        return n == ids.length ? ids : Arrays.copyOf(ids, n);
    }
}
