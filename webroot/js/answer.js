// One streamed answer: its tokens with their per-layer sparsity and timing, and the figures derived from them.
import { HEAD_SPARSITY_FIELD, MLP_SPARSITY_FIELD } from './protocol.js';

export class Answer {
  constructor() {
    this.tokens = [];
    this.finishReason = null;
    this.timeToFirstTokenMs = null;
  }

  get text() {
    return this.tokens.map((t) => t.text).join('');
  }

  get finished() {
    return this.finishReason !== null;
  }

  add(message) {
    this.tokens.push({
      index: message.index,
      id: message.token_id,
      text: message.text,
      mlpSkipped: message[MLP_SPARSITY_FIELD] ?? null,
      headsSkipped: message[HEAD_SPARSITY_FIELD] ?? null,
      stepMs: message.timing?.step_ms ?? null,
      batchSize: message.timing?.batch_size ?? null,
      elapsedMs: message.timing?.elapsed_ms ?? null,
    });
  }

  finish(message) {
    this.finishReason = message.finish_reason;
    this.timeToFirstTokenMs = message.timing?.time_to_first_token_ms ?? null;
  }

  /** Decode speed: the interval between the first and the last token, so that prefill does not count. */
  get msPerToken() {
    const n = this.tokens.length;
    if (n < 2) return null;
    return (this.tokens[n - 1].elapsedMs - this.tokens[0].elapsedMs) / (n - 1);
  }

  get tokensPerSecond() {
    const ms = this.msPerToken;
    return ms ? 1000 / ms : null;
  }

  /** Mean share skipped over the tokens that report it, or null when none does (a dense engine). */
  averageSkipped(field) {
    const values = this.tokens.map((t) => t[field]).filter((layers) => layers?.length);
    if (!values.length) return null;
    return values.reduce((sum, layers) => sum + mean(layers), 0) / values.length;
  }

  summary() {
    const n = this.tokens.length;
    const parts = [`${n} token${n === 1 ? '' : 's'}`];
    const rate = this.tokensPerSecond;
    if (rate) parts.push(`${rate.toFixed(1)} tokens/s`, `${this.msPerToken.toFixed(1)} ms/token`);
    const first = this.timeToFirstTokenMs ?? this.tokens[0]?.elapsedMs;
    if (first != null) parts.push(`first token ${Math.round(first)} ms`);
    const mlp = this.averageSkipped('mlpSkipped');
    parts.push(mlp === null ? 'MLP: dense' : `MLP skipped ${percent(mlp)}`);
    const heads = this.averageSkipped('headsSkipped');
    parts.push(heads === null ? 'heads: dense' : `heads skipped ${percent(heads)}`);
    return parts.join(' · ');
  }
}

export function mean(values) {
  return values.reduce((a, b) => a + b, 0) / values.length;
}

export function percent(share) {
  return `${(share * 100).toFixed(share > 0 && share < 0.1 ? 1 : 0)}%`;
}
