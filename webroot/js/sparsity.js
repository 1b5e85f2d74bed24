// The sparsity panel: the two heatmaps of the current answer, its running summary and one token's layers.
import { Heatmap } from './heatmap.js';
import { percent } from './answer.js';

export class SparsityView {
  constructor() {
    this.summary = document.getElementById('summary');
    this.detail = document.getElementById('token-detail');
    this.mode = document.getElementById('sparsity-mode');
    this.answer = null;
    this.tokenElements = null;
    const pick = (index) => this.pick(index);
    this.heatmaps = [
      new Heatmap(document.getElementById('heat-mlp'), 'mlpSkipped', pick),
      new Heatmap(document.getElementById('heat-heads'), 'headsSkipped', pick),
    ];
  }

  setLayers(layers) {
    for (const h of this.heatmaps) h.setLayers(layers);
  }

  /**
   * Shows an answer, which may still be streaming; update() redraws as it grows.
   * @param tokenElements (index) => the element showing that token, to highlight, or null
   */
  show(answer, tokenElements = null) {
    this.answer = answer;
    this.tokenElements = tokenElements;
    for (const h of this.heatmaps) h.show(answer);
    this.detail.textContent = 'Hover or pick a token to see its layers.';
    this.update();
  }

  update() {
    if (!this.answer) return;
    for (const h of this.heatmaps) h.draw();
    this.summary.textContent = this.answer.summary();
    const sparse = this.answer.averageSkipped('mlpSkipped') !== null;
    this.mode.textContent = sparse ? '' : '— dense: the engine reports no skipped neurons';
  }

  pick(index) {
    for (const h of this.heatmaps) h.pick(index);
    document.querySelectorAll('.tok.picked').forEach((e) => e.classList.remove('picked'));
    const token = index === null ? null : this.answer?.tokens[index];
    if (!token) return;
    this.tokenElements?.(index)?.classList.add('picked');
    const layers = Math.max(token.mlpSkipped?.length ?? 0, token.headsSkipped?.length ?? 0, this.heatmaps[0].layers);
    const cell = (skipped, layer) => (skipped ? percent(1 - (skipped[layer] ?? 0)) : 'dense');
    const rows = [];
    for (let layer = 0; layer < layers; layer++) {
      rows.push(`<tr><th scope="row">${layer}</th><td>${cell(token.mlpSkipped, layer)}</td>`
        + `<td>${cell(token.headsSkipped, layer)}</td></tr>`);
    }
    const timing = token.stepMs == null ? '' : ` · step ${token.stepMs.toFixed(1)} ms, batch ${token.batchSize}`;
    this.detail.innerHTML = `<p>Token ${index}: <code></code>${timing}</p>`
      + '<table><thead><tr><th>layer</th><th>MLP computed</th><th>heads computed</th></tr></thead>'
      + `<tbody>${rows.join('')}</tbody></table>`;
    this.detail.querySelector('code').textContent = JSON.stringify(token.text);
  }
}
