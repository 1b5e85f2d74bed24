// The service's WebSocket protocol (io.dejavu.api.WebSocketSession) as the page uses it, and its error codes.

/** The per-request dense/sparse switch the compare view sends; one name to align with the server. */
export const SPARSE_PARAM = 'sparse';
/** Per-layer share of MLP (FFN) neurons the engine skipped for a token; null for a token computed densely. */
export const MLP_SPARSITY_FIELD = 'sparsity';
/** Per-layer share of attention heads skipped for a token; null for a token computed densely. */
export const HEAD_SPARSITY_FIELD = 'head_sparsity';

export const DEFAULT_PARAMS = Object.freeze({
  temperature: 0.7,
  top_p: 0.9,
  top_k: 40,
  max_tokens: 64,
  seed: null,
  stop: [],
});

export function webSocketUrl(apiKey) {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  // A browser cannot set the Authorization header on a WebSocket; the server accepts ?api_key= instead.
  const query = apiKey ? `?api_key=${encodeURIComponent(apiKey)}` : '';
  return `${scheme}://${location.host}/ws${query}`;
}

export function authHeaders(apiKey) {
  return apiKey ? { Authorization: `Bearer ${apiKey}` } : {};
}

/** What to tell a person about a server error object {message, type, param, code}. */
export function describeError(error) {
  switch (error?.code) {
    case 'queue_full':
      return 'The server is busy: its queue is full. Try again in a moment.';
    case 'shutting_down':
      return 'The server is shutting down; the page reconnects when it is back.';
    case 'context_length_exceeded':
      return `The prompt is too long. ${error.message}. Start a new chat or shorten it.`;
    case 'message_too_large':
      return `The prompt is too long to send: ${error.message}. Start a new chat or shorten it.`;
    case 'invalid_api_key':
      return 'This server needs an API key: enter it in the side panel.';
    case 'connection_lost':
    case 'not_connected':
      return error.message;
    case 'sparsity_unavailable':
      return 'This server has no sparsity predictors loaded: it answers dense only.';
    case 'engine_error':
      return `The engine failed on this request: ${error.message}`;
    default:
      return error?.param ? `${error.param}: ${error.message}` : (error?.message ?? 'Unknown error');
  }
}
