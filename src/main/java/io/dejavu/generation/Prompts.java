package io.dejavu.generation;

import io.dejavu.model.OptConfig;
import io.dejavu.tokenizer.Tokenizer;

/** Prompt ids the OPT way: the config's bos_token_id (2, "</s>") before the text's tokens. */
public final class Prompts {
    private Prompts() {
    }

    public static int[] withBos(Tokenizer tokenizer, OptConfig config, String text) {
        int[] ids = tokenizer.encode(text);
        int[] withBos = new int[ids.length + 1];
        withBos[0] = config.bosTokenId();
        System.arraycopy(ids, 0, withBos, 1, ids.length);
        return withBos;
    }
}
