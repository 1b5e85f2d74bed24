// One WebSocket per tab carrying any number of generations, with reconnection and exponential backoff.

const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 10000;

/**
 * Events: 'status' with detail {state: 'connecting' | 'open' | 'waiting' | 'auth', attempt, delayMs}.
 * A dropped socket ends its running generations with a 'connection_lost' error; none is resent on its own.
 */
export class Connection extends EventTarget {
  /**
   * @param url       () => the WebSocket URL (it carries the API key)
   * @param needsAuth async () => true when the server refuses us for want of a key; asked after a failed handshake
   */
  constructor({ url, needsAuth }) {
    super();
    this.url = url;
    this.needsAuth = needsAuth;
    this.socket = null;
    this.attempt = 0;
    this.timer = null;
    this.handlers = new Map();
    this.sequence = 0;
    this.prefix = Math.random().toString(36).slice(2, 10);
  }

  get open() {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  /** Connects now, dropping any socket and pending retry (after a new API key, or "Reconnect now"). */
  connect() {
    clearTimeout(this.timer);
    if (this.socket) {
      this.socket.onclose = null;
      this.socket.close(1000);
      this.failAll('The connection was restarted; the answer was cut off.');
    }
    this.status('connecting');
    const socket = new WebSocket(this.url());
    let opened = false;
    socket.onopen = () => {
      opened = true;
      this.attempt = 0;
      this.status('open');
    };
    socket.onmessage = (event) => this.receive(event.data);
    socket.onclose = async () => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.failAll('The connection dropped; the answer was cut off.');
      if (!opened && await this.needsAuth()) {
        this.status('auth');
        return;
      }
      this.scheduleRetry();
    };
    this.socket = socket;
  }

  scheduleRetry() {
    const base = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** this.attempt);
    // Jitter, so that the tabs of a restarted server do not all come back at the same instant.
    const delayMs = Math.round(base * (0.8 + 0.4 * Math.random()));
    this.attempt++;
    this.status('waiting', delayMs);
    this.timer = setTimeout(() => this.connect(), delayMs);
  }

  status(state, delayMs = 0) {
    this.dispatchEvent(new CustomEvent('status', { detail: { state, attempt: this.attempt, delayMs } }));
  }

  /**
   * Starts a generation.
   * @param body     the request without type and id: prompt or messages, and the parameters
   * @param handlers {token(message), done(message), error(errorObject)}
   * @returns its id, for cancel
   */
  generate(body, handlers) {
    const id = `${this.prefix}-${++this.sequence}`;
    if (!this.open) {
      queueMicrotask(() => handlers.error({ code: 'not_connected', message: 'Not connected to the server; reconnecting…' }));
      return id;
    }
    this.handlers.set(id, handlers);
    this.socket.send(JSON.stringify({ type: 'generate', id, ...body }));
    return id;
  }

  cancel(id) {
    if (this.open && this.handlers.has(id)) this.socket.send(JSON.stringify({ type: 'cancel', id }));
  }

  receive(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    const handlers = this.handlers.get(message.id);
    if (!handlers) return;
    if (message.type === 'token') {
      handlers.token(message);
    } else if (message.type === 'done') {
      this.handlers.delete(message.id);
      handlers.done(message);
    } else if (message.type === 'error') {
      this.handlers.delete(message.id);
      handlers.error(message.error);
    }
  }

  failAll(message) {
    const running = [...this.handlers.values()];
    this.handlers.clear();
    for (const handlers of running) handlers.error({ code: 'connection_lost', message });
  }
}
