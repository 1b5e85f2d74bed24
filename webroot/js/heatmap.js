// A heatmap on a canvas: a column per generated token, a row per layer, colour = share of units computed.

const COLUMN_PX = 8;
const ROW_PX = 12;
/** The ramp's ends: pale = little computed (much skipped), deep = all computed (dense). */
const LOW = [255, 247, 188];
const HIGH = [63, 0, 125];

export function computedColour(share) {
  const t = Math.max(0, Math.min(1, share));
  const c = LOW.map((low, i) => Math.round(low + (HIGH[i] - low) * t));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

export class Heatmap {
  /**
   * @param canvas the canvas to draw on
   * @param field  the token field with the per-layer share skipped ('mlpSkipped' or 'headsSkipped')
   * @param onPick (index | null) => void, when a token is hovered or picked by keyboard
   */
  constructor(canvas, field, onPick) {
    this.canvas = canvas;
    this.field = field;
    this.layers = 1;
    this.answer = null;
    this.picked = null;
    this.pending = false;
    canvas.addEventListener('mousemove', (e) => onPick(this.columnAt(e.offsetX)));
    canvas.addEventListener('mouseleave', () => onPick(null));
    canvas.addEventListener('keydown', (e) => {
      const n = this.answer?.tokens.length ?? 0;
      if (!n) return;
      const moves = { ArrowLeft: -1, ArrowRight: 1, Home: -Infinity, End: Infinity };
      if (!(e.key in moves)) return;
      e.preventDefault();
      const from = this.picked ?? n;
      onPick(Math.max(0, Math.min(n - 1, from + moves[e.key])));
    });
  }

  setLayers(layers) {
    this.layers = layers;
    this.draw();
  }

  show(answer) {
    this.answer = answer;
    this.picked = null;
    this.draw();
  }

  pick(index) {
    this.picked = index;
    this.draw();
    if (index !== null) this.scrollTo(index);
  }

  columnAt(x) {
    const index = Math.floor(x / COLUMN_PX);
    return this.answer && index < this.answer.tokens.length ? index : null;
  }

  /** Draws at the next frame: tokens may arrive faster than the screen refreshes. */
  draw() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.paint();
    });
  }

  paint() {
    const tokens = this.answer?.tokens ?? [];
    const rows = Math.max(this.layers, ...tokens.map((t) => t[this.field]?.length ?? 0));
    const width = Math.max(this.canvas.parentElement.clientWidth, tokens.length * COLUMN_PX);
    const height = rows * ROW_PX;
    if (this.canvas.width !== width) this.canvas.width = width;
    if (this.canvas.height !== height) this.canvas.height = height;
    const g = this.canvas.getContext('2d');
    g.fillStyle = '#f4f4f6';
    g.fillRect(0, 0, width, height);
    tokens.forEach((token, column) => {
      const skipped = token[this.field];
      for (let row = 0; row < rows; row++) {
        // No figures means the engine ran this layer dense: everything computed.
        const computed = skipped ? 1 - (skipped[row] ?? 0) : 1;
        g.fillStyle = computedColour(computed);
        // Layer 0 at the top, as a model is read from input to output.
        g.fillRect(column * COLUMN_PX, row * ROW_PX, COLUMN_PX - 1, ROW_PX - 1);
      }
    });
    if (this.picked !== null && this.picked < tokens.length) {
      g.strokeStyle = '#ff5a1f';
      g.lineWidth = 2;
      g.strokeRect(this.picked * COLUMN_PX + 1, 1, COLUMN_PX - 2, height - 2);
    }
    const scroller = this.canvas.parentElement;
    if (this.picked === null && this.answer && !this.answer.finished) scroller.scrollLeft = scroller.scrollWidth;
  }

  scrollTo(index) {
    const scroller = this.canvas.parentElement;
    const x = index * COLUMN_PX;
    if (x < scroller.scrollLeft || x > scroller.scrollLeft + scroller.clientWidth - COLUMN_PX) {
      scroller.scrollLeft = x - scroller.clientWidth / 2;
    }
  }
}
