package io.dejavu.sampling;

/** A token and its natural-log probability under the model's own distribution. */
public record TokenLogprob(int token, double logprob) {
}
