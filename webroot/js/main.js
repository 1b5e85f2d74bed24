// The playground: wires the tab's connection, the side panel, the model card and the three modes together.
import { Compare } from './compare.js';
import { Connection } from './connection.js';
import { el } from './dom.js';
import { authHeaders, DEFAULT_PARAMS, SPARSE_PARAM, webSocketUrl } from './protocol.js';
import { SparsityView } from './sparsity.js';
import { Transcript } from './transcript.js';

const KEY_STORAGE = 'dejavu.apiKey';
const $ = (id) => document.getElementById(id);

let apiKey = sessionStorage.getItem(KEY_STORAGE) ?? '';
let modelName = null;

const connection = new Connection({ url: () => webSocketUrl(apiKey), needsAuth });
const sparsity = new SparsityView();
const onBusy = () => updateButtons();
const transcript = new Transcript({ connection, params: readParams, sparsity, onBusy });
const compare = new Compare({ connection, params: readParams, sparsity, onBusy });
let mode = 'chat';

// --- parameters ---------------------------------------------------------------------------------------------

const paramsForm = $('params');

function readParams() {
  const f = paramsForm.elements;
  const number = (name) => (f[name].value === '' ? null : Number(f[name].value));
  const stop = f.stop.value.split('\n').filter((s) => s !== '').map((s) => s.replaceAll('\\n', '\n'));
  // Absent: the server's sparse_default. Compare sets its own on each side.
  const sparse = f.sparse.value === '' ? {} : { [SPARSE_PARAM]: f.sparse.value === 'true' };
  return {
    temperature: number('temperature') ?? DEFAULT_PARAMS.temperature,
    top_p: number('top_p') ?? DEFAULT_PARAMS.top_p,
    top_k: number('top_k') ?? DEFAULT_PARAMS.top_k,
    max_tokens: number('max_tokens') ?? DEFAULT_PARAMS.max_tokens,
    seed: number('seed'),
    stop,
    ...sparse,
  };
}

function resetParams() {
  const f = paramsForm.elements;
  for (const name of ['temperature', 'top_p', 'top_k', 'max_tokens']) f[name].value = DEFAULT_PARAMS[name];
  f.seed.value = '';
  f.stop.value = '';
  f.sparse.value = '';
}

$('reset-params').addEventListener('click', resetParams);

// --- modes --------------------------------------------------------------------------------------------------

const tabs = [...document.querySelectorAll('.modes [role=tab]')];

/** @param focusInput false when the arrow keys move along the tabs: the focus stays on the tab. */
function setMode(next, focusInput = true) {
  mode = next;
  for (const tab of tabs) {
    const selected = tab.dataset.mode === next;
    tab.setAttribute('aria-selected', selected);
    tab.tabIndex = selected ? 0 : -1;
  }
  $('single').hidden = next === 'compare';
  $('compare').hidden = next !== 'compare';
  if (next !== 'compare') {
    transcript.setMode(next);
    $('prompt').placeholder = next === 'chat'
      ? 'Type a message — Enter sends, Shift+Enter breaks the line, Esc stops'
      : 'A raw prompt for the model to continue — Enter sends, Esc stops';
  }
  if (focusInput) $(next === 'compare' ? 'compare-prompt' : 'prompt').focus();
  updateButtons();
}

for (const tab of tabs) {
  tab.addEventListener('click', () => setMode(tab.dataset.mode));
  tab.addEventListener('keydown', (e) => {
    const step = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
    if (!step) return;
    const next = tabs[(tabs.indexOf(tab) + step + tabs.length) % tabs.length];
    setMode(next.dataset.mode, false);
    next.focus();
  });
}

// --- chat and completion ------------------------------------------------------------------------------------

function updateButtons() {
  $('send').disabled = transcript.busy;
  $('stop').disabled = !transcript.busy;
  $('regenerate').disabled = !transcript.canRegenerate;
  $('compare-run').disabled = compare.busy;
  $('compare-stop').disabled = !compare.busy;
}

$('composer').addEventListener('submit', (e) => {
  e.preventDefault();
  if (transcript.send($('prompt').value)) $('prompt').value = '';
});
$('prompt').addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $('composer').requestSubmit();
  }
});
$('stop').addEventListener('click', () => transcript.stop());
$('regenerate').addEventListener('click', () => transcript.regenerate());
$('new-chat').addEventListener('click', () => {
  transcript.clear();
  updateButtons();
  $('prompt').focus();
});

$('compare-form').addEventListener('submit', (e) => {
  e.preventDefault();
  compare.run($('compare-prompt').value);
});
$('compare-prompt').addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $('compare-form').requestSubmit();
  }
});
$('compare-stop').addEventListener('click', () => compare.stop());

document.addEventListener('keydown', (e) => {
  if (e.key !== 'Escape') return;
  transcript.stop();
  compare.stop();
});

// --- side panel (a drawer on small screens) -----------------------------------------------------------------

$('toggle-panel').addEventListener('click', () => {
  const open = document.body.classList.toggle('panel-open');
  $('toggle-panel').setAttribute('aria-expanded', open);
  if (open) paramsForm.elements.temperature.focus();
});

// --- connection, API key and model card ---------------------------------------------------------------------

const statusLabel = $('connection');
const banner = $('banner');

connection.addEventListener('status', ({ detail }) => {
  const { state, attempt, delayMs } = detail;
  statusLabel.dataset.state = state;
  statusLabel.textContent = { open: 'connected', connecting: 'connecting…', waiting: 'offline', auth: 'API key needed' }[state];
  banner.hidden = state === 'open' || (state === 'connecting' && attempt === 0);
  $('banner-retry').hidden = state !== 'waiting';
  if (state === 'waiting') {
    $('banner-text').textContent = `Connection to the server lost. Reconnecting in ${(delayMs / 1000).toFixed(1)} s `
      + `(attempt ${attempt})…`;
  } else if (state === 'connecting') {
    $('banner-text').textContent = `Reconnecting (attempt ${attempt})…`;
  } else if (state === 'auth') {
    $('banner-text').textContent = 'This server needs an API key: enter it in the side panel.';
    showAuth(apiKey ? 'The server refused this key.' : '');
  }
  if (state === 'open' && !modelName) loadModelCard();
});
$('banner-retry').addEventListener('click', () => connection.connect());

function showAuth(message) {
  $('auth').hidden = false;
  $('auth-error').textContent = message;
  document.body.classList.add('panel-open');
  $('toggle-panel').setAttribute('aria-expanded', true);
  $('api-key').focus();
}

/** The WebSocket handshake does not say why it failed; the HTTP API does. */
async function needsAuth() {
  try {
    const response = await fetch('/v1/models', { headers: authHeaders(apiKey) });
    return response.status === 401;
  } catch {
    return false;
  }
}

$('auth').addEventListener('submit', async (e) => {
  e.preventDefault();
  apiKey = $('api-key').value.trim();
  sessionStorage.setItem(KEY_STORAGE, apiKey);
  if (await needsAuth()) {
    $('auth-error').textContent = 'The server refused this key.';
    return;
  }
  $('auth').hidden = true;
  modelName = null;
  connection.connect();
});

async function loadModelCard() {
  const card = $('model-card');
  try {
    const health = await (await fetch('/health')).json();
    const response = await fetch(`/v1/models/${encodeURIComponent(health.model)}`, { headers: authHeaders(apiKey) });
    if (response.status === 401) {
      showAuth('');
      return;
    }
    const info = (await response.json()).card;
    modelName = health.model;
    sparsity.setLayers(info.layers);
    // Without predictors the server refuses sparse requests: do not offer them.
    const sparseOption = paramsForm.elements.sparse.querySelector('option[value=true]');
    sparseOption.disabled = !info.predictors_calibrated;
    if (sparseOption.disabled && sparseOption.selected) paramsForm.elements.sparse.value = '';
    paramsForm.elements.max_tokens.max = info.max_output_tokens;
    const rows = [
      ['name', info.name],
      ['size', `${formatCount(info.parameters)} parameters, ${formatBytes(info.weights_bytes)}`],
      ['layers', info.layers],
      ['heads', `${info.heads} per layer`],
      ['neurons', `${info.neurons} per MLP`],
      ['context', `${info.context} tokens`],
      ['backend', info.backend ?? 'starting'],
      ['sparsity', info.sparsity],
      ['predictors', info.predictors_calibrated ? 'calibrated' : 'not calibrated'],
    ];
    card.replaceChildren(...rows.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, String(v))]));
  } catch {
    card.replaceChildren(el('dt', {}, 'model'), el('dd', {}, 'unavailable'));
  }
}

function formatCount(n) {
  return n >= 1e9 ? `${(n / 1e9).toFixed(1)} B` : n >= 1e6 ? `${(n / 1e6).toFixed(1)} M` : `${n}`;
}

function formatBytes(n) {
  if (n < 0) return 'size unknown';
  return n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(1)} GiB` : `${(n / 2 ** 20).toFixed(1)} MiB`;
}

resetParams();
setMode('chat');
connection.connect();
