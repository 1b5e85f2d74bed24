// Compare: one raw prompt run dense and sparse at once, same parameters and seed, with speeds and divergence.
import { Answer } from './answer.js';
import { el, tokenSpan } from './dom.js';
import { describeError, SPARSE_PARAM } from './protocol.js';

export class Compare {
  constructor({ connection, params, sparsity, onBusy }) {
    this.connection = connection;
    this.params = params;
    this.sparsity = sparsity;
    this.onBusy = onBusy;
    this.divergence = document.getElementById('divergence');
    this.sides = [...document.querySelectorAll('#compare .side')].map((root) => ({
      root,
      sparse: root.dataset.sparse === 'true',
      stats: root.querySelector('.side-stats'),
      note: root.querySelector('.side-note'),
      text: root.querySelector('.side-text'),
      answer: null,
      spans: [],
      id: null,
      running: false,
    }));
  }

  get busy() {
    return this.sides.some((s) => s.running);
  }

  run(prompt) {
    if (this.busy || !prompt.trim()) return false;
    const params = this.params();
    // Both sides must sample alike for their texts to be comparable: one seed for the two.
    if (params.seed == null) params.seed = Math.floor(Math.random() * 2 ** 31);
    this.divergence.textContent = `Seed ${params.seed}.`;
    for (const side of this.sides) this.start(side, { ...params, prompt, [SPARSE_PARAM]: side.sparse }, true);
    this.onBusy(true);
    return true;
  }

  stop() {
    for (const side of this.sides) if (side.running) this.connection.cancel(side.id);
  }

  /** @param withSwitch false when the server refused the switch and we run its default setting instead */
  start(side, request, withSwitch) {
    const answer = new Answer();
    Object.assign(side, { answer, spans: [], running: true });
    side.text.replaceChildren();
    side.text.classList.add('streaming');
    side.note.hidden = withSwitch;
    side.note.textContent = withSwitch ? '' : `This server has no per-request "${SPARSE_PARAM}" switch yet: `
      + 'this side ran its default setting.';
    side.stats.textContent = 'waiting…';
    // The panel follows the sparse side, the one with figures to show; hovering the other switches to it.
    if (side.sparse) this.sparsity.show(answer, (i) => side.spans[i]);
    const end = (text) => {
      side.running = false;
      side.text.classList.remove('streaming');
      side.stats.textContent = text;
      this.compareTexts();
      if (!this.busy) this.onBusy(false);
    };
    side.id = this.connection.generate(request, {
      token: (message) => {
        answer.add(message);
        const index = answer.tokens.length - 1;
        const span = tokenSpan(answer.tokens[index], index, (i) => this.showSide(side, i));
        side.spans.push(span);
        side.text.append(span);
        side.stats.textContent = answer.summary();
        if (this.sparsity.answer === answer) this.sparsity.update();
        this.compareTexts();
      },
      done: (message) => {
        answer.finish(message);
        end(message.finish_reason === 'error' ? describeError(message.error) : answer.summary());
      },
      error: (error) => {
        if (withSwitch && error.code === 'unknown_parameter' && error.param === SPARSE_PARAM) {
          const { [SPARSE_PARAM]: ignored, ...plain } = request;
          this.start(side, plain, false);
          return;
        }
        end(describeError(error));
        side.stats.classList.add('error-text');
      },
    });
    side.stats.classList.remove('error-text');
  }

  /** Shows a side's answer in the sparsity panel and picks the token hovered. */
  showSide(side, index) {
    if (this.sparsity.answer !== side.answer) this.sparsity.show(side.answer, (i) => side.spans[i]);
    this.sparsity.pick(index);
  }

  /** Marks where the two token streams first differ. */
  compareTexts() {
    const [a, b] = this.sides;
    if (!a.answer || !b.answer) return;
    const ta = a.answer.tokens;
    const tb = b.answer.tokens;
    const common = Math.min(ta.length, tb.length);
    let at = 0;
    while (at < common && ta[at].id === tb[at].id) at++;
    const diverged = at < common || (!this.busy && ta.length !== tb.length);
    for (const side of this.sides) {
      side.spans.forEach((span, i) => span.classList.toggle('diverged', diverged && i >= at));
    }
    const seed = this.divergence.textContent.match(/^Seed \d+\./)?.[0] ?? '';
    const speed = [];
    if (!this.busy && a.answer.tokensPerSecond && b.answer.tokensPerSecond) {
      const [dense, sparse] = a.sparse ? [b, a] : [a, b];
      speed.push(` Sparse decodes at ${(sparse.answer.tokensPerSecond / dense.answer.tokensPerSecond).toFixed(2)}× `
        + 'the dense speed.');
    }
    this.divergence.replaceChildren(seed, ' ', diverged
      ? el('strong', {}, `The texts diverge at token ${at}.`)
      : `Identical so far (${common} token${common === 1 ? '' : 's'}).`, ...speed);
  }
}
