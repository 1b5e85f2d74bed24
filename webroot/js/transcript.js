// Chat and completion: the transcript, one streaming answer at a time, Stop, Regenerate, New chat and copy.
import { Answer } from './answer.js';
import { copyText, el, tokenSpan } from './dom.js';
import { describeError } from './protocol.js';

const STORAGE_KEY = 'dejavu.transcript';

export class Transcript {
  /**
   * @param connection the tab's Connection
   * @param params     () => the side panel's generation parameters
   * @param sparsity   the SparsityView that shows the current answer
   * @param onBusy     (busy) => void, as an answer starts and ends
   */
  constructor({ connection, params, sparsity, onBusy }) {
    this.connection = connection;
    this.params = params;
    this.sparsity = sparsity;
    this.onBusy = onBusy;
    this.root = document.getElementById('transcript');
    this.mode = 'chat';
    /** Chat: [{role, content}]; completion: [{role: 'prompt', content}] then the answer. */
    this.turns = [];
    this.running = null;
    this.restore();
  }

  setMode(mode) {
    if (mode === this.mode) return;
    this.stop();
    this.mode = mode;
    this.clear();
  }

  get busy() {
    return this.running !== null;
  }

  send(text) {
    if (this.busy || !text.trim()) return false;
    if (this.mode === 'completion') this.clear();
    this.turns.push({ role: this.mode === 'chat' ? 'user' : 'prompt', content: text });
    this.renderTurn(this.turns.at(-1));
    this.answer();
    return true;
  }

  /** Drops the last answer and asks again with the same history and the panel's current parameters. */
  regenerate() {
    if (this.busy) return;
    if (this.turns.at(-1)?.role === 'assistant') {
      this.turns.pop();
      this.root.lastElementChild?.remove();
    }
    if (this.turns.length) this.answer();
  }

  stop() {
    if (this.running) this.connection.cancel(this.running.id);
  }

  clear() {
    this.stop();
    this.turns = [];
    this.root.replaceChildren();
    this.save();
  }

  get canRegenerate() {
    return !this.busy && this.turns.length > 0;
  }

  answer() {
    const answer = new Answer();
    const body = el('div', { class: 'body' });
    const status = el('span', { class: 'status' }, 'generating…');
    const copy = el('button', { type: 'button', class: 'ghost small', 'aria-label': 'Copy this answer',
      onclick: async () => {
        // the browser may refuse (permission denied, page not focused): say so rather than fail silently
        copy.textContent = await copyText(answer.text).then(() => 'Copied', () => 'Copy failed');
        setTimeout(() => { copy.textContent = 'Copy'; }, 1500);
      } }, 'Copy');
    const box = el('div', { class: 'turn assistant streaming' },
      el('div', { class: 'role' }, this.mode === 'chat' ? 'assistant' : 'completion'), body,
      el('div', { class: 'turn-footer' }, status, copy));
    this.root.append(box);
    const spans = [];
    this.sparsity.show(answer, (i) => spans[i]);
    const pick = (i) => this.sparsity.pick(i);

    const request = { ...this.params() };
    if (this.mode === 'chat') {
      request.messages = this.turns.map(({ role, content }) => ({ role, content }));
    } else {
      request.prompt = this.turns[0].content;
    }
    const end = (text, isError) => {
      this.running = null;
      box.classList.remove('streaming');
      status.textContent = text;
      status.classList.toggle('error-text', isError);
      // The transcript is not a live region (a screen reader would read every token); the end is announced.
      document.getElementById('announce').textContent = `${text}: ${answer.text}`;
      if (answer.tokens.length) {
        this.turns.push({ role: 'assistant', content: answer.text });
        this.save();
      }
      this.onBusy(false);
    };
    const id = this.connection.generate(request, {
      token: (message) => {
        answer.add(message);
        const span = tokenSpan(answer.tokens.at(-1), answer.tokens.length - 1, pick);
        spans.push(span);
        body.append(span);
        this.sparsity.update();
        this.scroll();
      },
      done: (message) => {
        answer.finish(message);
        this.sparsity.update();
        if (message.finish_reason === 'error') end(describeError(message.error), true);
        else end(finishText(message.finish_reason), false);
      },
      error: (error) => end(describeError(error), true),
    });
    this.running = { id, answer };
    this.onBusy(true);
  }

  renderTurn(turn) {
    const label = { user: 'you', prompt: 'prompt', assistant: this.mode === 'chat' ? 'assistant' : 'completion' }[turn.role];
    this.root.append(el('div', { class: `turn ${turn.role}` },
      el('div', { class: 'role' }, label), el('div', { class: 'body' }, turn.content)));
    this.scroll();
  }

  scroll() {
    this.root.scrollTop = this.root.scrollHeight;
  }

  /** The tab keeps its own transcript across reloads; sessionStorage is per tab, so tabs do not share one. */
  save() {
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify({ mode: this.mode, turns: this.turns }));
  }

  restore() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) ?? 'null');
      if (!saved || saved.mode !== 'chat') return;
      this.turns = saved.turns;
      this.turns.forEach((turn) => this.renderTurn(turn));
    } catch {
      sessionStorage.removeItem(STORAGE_KEY);
    }
  }
}

function finishText(reason) {
  return {
    stop: 'finished',
    length: 'stopped at max tokens',
    cancelled: 'stopped',
  }[reason] ?? reason;
}
