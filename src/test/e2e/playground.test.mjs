// The browser playground in a real browser (Debian's chromium, driven by playwright-core) against real servers.
// DEJAVU_URL: an open server with max_prompt_tokens 96; DEJAVU_KEYED_URL: one that asks for the key DEJAVU_KEY.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const URL = process.env.DEJAVU_URL;
const KEYED_URL = process.env.DEJAVU_KEYED_URL;
const SCREENSHOTS = process.env.SCREENSHOTS ?? 'target/e2e';
const DENSE_COLOUR = [63, 0, 125];

let browser;
let profile;

before(async () => {
  assert.ok(URL && KEYED_URL, 'set DEJAVU_URL and DEJAVU_KEYED_URL (src/test/e2e/run.sh does)');
  profile = mkdtempSync(join(tmpdir(), 'dejavu-e2e-'));
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

async function openPage(url = URL, viewport = null) {
  const page = await browser.newPage();
  if (viewport) await page.setViewportSize(viewport);
  const failures = [];
  page.on('pageerror', (e) => failures.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') failures.push(m.text()); });
  page.failures = failures;
  // Nothing from a CDN or anywhere else: the page must work offline on a LAN.
  const origin = new globalThis.URL(url).origin;
  page.on('request', (request) => {
    const target = request.url();
    if (!target.startsWith('data:') && new globalThis.URL(target).origin !== origin) failures.push(`request to ${target}`);
  });
  await page.goto(url);
  return page;
}

async function connected(page) {
  await page.locator('#connection[data-state=open]').waitFor({ timeout: 30_000 });
  await page.locator('#model-card dd', { hasText: 'opt-demo' }).waitFor({ state: 'attached', timeout: 30_000 });
}

/** Counts, in the page, each time the transcript gains tokens, so that the test can tell a stream from a dump. */
async function recordTokenArrivals(page, root) {
  await page.evaluate((selector) => {
    window.arrivals = [];
    new MutationObserver(() => {
      window.arrivals.push(document.querySelectorAll(`${selector} .tok`).length);
    }).observe(document.querySelector(selector), { childList: true, subtree: true });
  }, root);
}

function heatmapPixels(page, id) {
  return page.evaluate((canvasId) => {
    const canvas = document.getElementById(canvasId);
    return { url: canvas.toDataURL(), corner: [...canvas.getContext('2d').getImageData(2, 2, 1, 1).data].slice(0, 3) };
  }, id);
}

test('chat: tokens stream in, the heatmaps are drawn, hovering a token shows its layers', async () => {
  const page = await openPage();
  await connected(page);
  assert.match(await page.locator('#model-card').innerText(), /8\.7 M parameters/);
  const blankMlp = await heatmapPixels(page, 'heat-mlp');
  const blankHeads = await heatmapPixels(page, 'heat-heads');
  await recordTokenArrivals(page, '#transcript');

  await page.fill('input[name=max_tokens]', '24');
  await page.fill('input[name=seed]', '7');
  await page.fill('#prompt', 'Tell me about the old city by the river.');
  await page.press('#prompt', 'Enter');
  await page.locator('.turn.assistant .status', { hasText: /finished|stopped at max tokens/ }).waitFor({ timeout: 60_000 });

  const tokens = await page.locator('.turn.assistant .tok').count();
  assert.ok(tokens >= 2, `expected several tokens, got ${tokens}`);
  const arrivals = await page.evaluate(() => window.arrivals);
  const distinct = new Set(arrivals.filter((n) => n > 0));
  assert.ok(distinct.size >= Math.min(tokens, 3), `tokens should arrive one by one, saw counts ${[...distinct]}`);
  assert.ok(distinct.has(1), 'the first token was shown on its own before the others');

  const mlp = await heatmapPixels(page, 'heat-mlp');
  const heads = await heatmapPixels(page, 'heat-heads');
  assert.notEqual(mlp.url, blankMlp.url, 'the MLP heatmap was drawn');
  assert.notEqual(heads.url, blankHeads.url, 'the heads heatmap was drawn');
  // Chat sends no "sparse" and the server's sparse_default is false: every neuron computed, the deep end of the
  // ramp; the page says so.
  assert.deepEqual(mlp.corner, DENSE_COLOUR);
  assert.match(await page.locator('#summary').innerText(), new RegExp(`${tokens} tokens .*tokens/s.*ms/token.*MLP: dense`));
  assert.match(await page.locator('#sparsity-mode').innerText(), /dense/);

  await page.locator('.turn.assistant .tok').nth(1).hover();
  const detail = await page.locator('#token-detail').innerText();
  assert.match(detail, /Token 1/);
  assert.equal((detail.match(/dense/g) ?? []).length, 2 * 8, 'one row per layer of opt-demo, MLP and heads');
  // By keyboard: the heatmap takes the focus and the arrow keys walk the tokens.
  await page.focus('#heat-mlp');
  await page.keyboard.press('End');
  assert.match(await page.locator('#token-detail').innerText(), new RegExp(`Token ${tokens - 1}:`));
  await page.keyboard.press('ArrowLeft');
  assert.match(await page.locator('#token-detail').innerText(), new RegExp(`Token ${tokens - 2}:`));
  await page.locator('.turn.assistant .tok').nth(1).hover();
  await page.screenshot({ path: join(SCREENSHOTS, 'chat.png'), fullPage: true });

  // Copy puts the answer on the clipboard.
  await browser.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: URL });
  const answer = await page.locator('.turn.assistant .body').innerText();
  await page.click('.turn.assistant button:text("Copy")');
  await page.locator('.turn.assistant button:text("Copied")').waitFor();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), answer);

  // The tab keeps its conversation over a reload; another tab has its own.
  await page.reload();
  await connected(page);
  assert.equal(await page.locator('.turn.user .body').innerText(), 'Tell me about the old city by the river.');
  const other = await openPage();
  await connected(other);
  assert.equal(await other.locator('.turn').count(), 0);
  await other.close();

  // Regenerate replaces the answer; New chat clears the transcript.
  await page.click('#regenerate');
  await page.locator('.turn.assistant .status', { hasText: /finished|stopped at max tokens/ }).waitFor({ timeout: 60_000 });
  assert.equal(await page.locator('.turn.assistant').count(), 1);
  await page.click('#new-chat');
  assert.equal(await page.locator('.turn').count(), 0);
  assert.deepEqual(page.failures, []);
  await page.close();
});

test('completion mode continues a raw prompt, sparse when the panel asks', async () => {
  const page = await openPage();
  await connected(page);
  await page.click('#tab-completion');
  await page.fill('input[name=max_tokens]', '8');
  await page.fill('input[name=seed]', '5');
  await page.selectOption('select[name=sparse]', 'true');
  await page.fill('#prompt', 'Once upon a time');
  await page.press('#prompt', 'Enter');
  await page.locator('.turn.assistant .status', { hasText: /finished|stopped at max tokens/ }).waitFor({ timeout: 60_000 });
  assert.equal(await page.locator('.turn.prompt .body').innerText(), 'Once upon a time');
  assert.match(await page.locator('.turn.assistant .role').innerText(), /completion/i);
  assert.ok(await page.locator('.turn.assistant .tok').count() >= 2);
  // opt-demo's shipped predictors: most MLP neurons skipped from the second token on.
  assert.match(await page.locator('#summary').innerText(), /MLP skipped [5-9]\d%/);
  await page.click('#reset-params');
  assert.equal(await page.inputValue('select[name=sparse]'), '');
  await page.close();
});

test('Stop ends the stream before max tokens', async () => {
  const page = await openPage();
  await connected(page);
  await page.fill('input[name=max_tokens]', '256');
  // Press Stop as the second token arrives, from inside the page: a round trip through the test would race the model.
  await page.evaluate(() => {
    new MutationObserver((_, observer) => {
      if (document.querySelectorAll('#transcript .tok').length >= 2) {
        observer.disconnect();
        document.getElementById('stop').click();
      }
    }).observe(document.getElementById('transcript'), { childList: true, subtree: true });
  });
  await page.fill('#prompt', 'Write a long story about a ship.');
  await page.click('#send');
  await page.locator('.turn.assistant .status', { hasText: /^stopped$/ }).waitFor({ timeout: 60_000 });
  const tokens = await page.locator('.turn.assistant .tok').count();
  assert.ok(tokens >= 2 && tokens < 256, `stopped after ${tokens} tokens`);
  assert.equal(await page.isDisabled('#stop'), true);
  assert.equal(await page.isEnabled('#send'), true);
  await page.close();
});

/** Opens the page with its WebSocket passed through a recorder: returns the page and the messages it sent. */
async function recordedPage() {
  const page = await browser.newPage();
  const failures = [];
  page.on('pageerror', (e) => failures.push(e.message));
  page.failures = failures;
  const sent = [];
  await page.routeWebSocket(/\/ws/, (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((text) => {
      sent.push(JSON.parse(text));
      server.send(text);
    });
  });
  await page.goto(URL);
  await connected(page);
  return { page, sent };
}

test('the model card describes the model; the side panel\'s parameters are sent as set, and Defaults restores them', async () => {
  const { page, sent } = await recordedPage();
  const card = Object.fromEntries(await page.$$eval('#model-card dt',
    (terms) => terms.map((dt) => [dt.textContent, dt.nextElementSibling.textContent])));
  assert.deepEqual(card, {
    name: 'opt-demo',
    size: '8.7 M parameters, 16.6 MiB',
    layers: '8',
    heads: '4 per layer',
    neurons: '1024 per MLP',
    context: '1024 tokens',
    backend: 'cpu',
    sparsity: 'dense by default, sparse on request',
    predictors: 'calibrated',
  });

  await page.fill('input[name=temperature]', '0.3');
  await page.fill('input[name=top_p]', '0.8');
  await page.fill('input[name=top_k]', '12');
  await page.fill('input[name=max_tokens]', '5');
  await page.fill('input[name=seed]', '42');
  await page.fill('textarea[name=stop]', 'END\n\\n');
  await page.selectOption('select[name=sparse]', 'false');
  await page.fill('#prompt', 'Hi there');
  await page.press('#prompt', 'Enter');
  await page.locator('.turn.assistant .status', { hasText: /finished|stopped at max tokens/ }).waitFor({ timeout: 60_000 });
  const { id, ...chosen } = sent.find((m) => m.type === 'generate');
  assert.ok(id);
  assert.deepEqual(chosen, {
    type: 'generate', temperature: 0.3, top_p: 0.8, top_k: 12, max_tokens: 5, seed: 42, stop: ['END', '\n'],
    sparse: false, messages: [{ role: 'user', content: 'Hi there' }],
  });

  await page.click('#reset-params');
  await page.click('#tab-completion');
  await page.fill('#prompt', 'Once');
  await page.press('#prompt', 'Enter');
  await page.locator('.turn.assistant .status', { hasText: /finished|stopped at max tokens/ }).waitFor({ timeout: 60_000 });
  const { id: second, ...defaults } = sent.filter((m) => m.type === 'generate')[1];
  assert.notEqual(second, id);
  // No "sparse": the server's sparse_default decides.
  assert.deepEqual(defaults, {
    type: 'generate', temperature: 0.7, top_p: 0.9, top_k: 40, max_tokens: 64, seed: null, stop: [], prompt: 'Once',
  });
  assert.deepEqual(page.failures, []);
  await page.close();
});

test('keyboard: the arrow keys walk the mode tabs, Esc stops the answer; a prompt too large to send is explained', async () => {
  const { page, sent } = await recordedPage();
  await page.focus('#tab-chat');
  await page.keyboard.press('ArrowRight');
  await page.keyboard.press('ArrowRight');
  assert.equal(await page.getAttribute('#tab-compare', 'aria-selected'), 'true');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'tab-compare', 'the focus stays on the tabs');
  await page.keyboard.press('ArrowLeft');
  assert.equal(await page.getAttribute('#tab-completion', 'aria-selected'), 'true');
  assert.equal(await page.isVisible('#compare'), false);

  await page.click('#tab-chat');
  await page.fill('input[name=max_tokens]', '256');
  await page.fill('#prompt', 'Write a long story about a ship.');
  await page.press('#prompt', 'Enter');
  // A token's text may be empty (held back), so its span is there but not visible.
  await page.locator('.turn.assistant .tok').first().waitFor({ state: 'attached', timeout: 60_000 });
  await page.keyboard.press('Escape');
  await page.locator('.turn.assistant:not(.streaming)').waitFor({ timeout: 60_000 });
  const { id } = sent.find((m) => m.type === 'generate');
  assert.ok(sent.some((m) => m.type === 'cancel' && m.id === id), 'Esc sent a cancel for the running answer');
  assert.equal(await page.isEnabled('#send'), true);

  // Beyond the server's max_frame_bytes (65536): refused, and the page says so instead of waiting forever.
  await page.click('#new-chat');
  await page.fill('#prompt', 'x'.repeat(70_000));
  await page.press('#prompt', 'Enter');
  const status = page.locator('.turn.assistant .status.error-text');
  await status.waitFor({ timeout: 30_000 });
  assert.match(await status.innerText(), /The prompt is too long to send: .*65536 bytes.*shorten it/);
  assert.equal(await page.isEnabled('#send'), true);
  assert.deepEqual(page.failures, []);
  await page.close();
});

test('compare: the same prompt streams dense and sparse with speeds, divergence and real sparse figures', async () => {
  const page = await openPage();
  await connected(page);
  await page.click('#tab-compare');
  await page.fill('input[name=max_tokens]', '24');
  await recordTokenArrivals(page, '#compare');
  await page.fill('#compare-prompt', 'The history of the harbour');
  await page.press('#compare-prompt', 'Enter');
  for (const side of ['#side-dense', '#side-sparse']) {
    await page.locator(`${side} .side-stats`, { hasText: 'tokens/s' }).waitFor({ timeout: 60_000 });
  }
  await page.waitForFunction(() => !document.querySelector('#compare .streaming'), null, { timeout: 60_000 });
  for (const side of ['#side-dense', '#side-sparse']) {
    assert.ok(await page.locator(`${side} .tok`).count() >= 2, `${side} shows an answer`);
    assert.match(await page.locator(`${side} .side-stats`).innerText(), /tokens\/s.*ms\/token/);
  }
  assert.match(await page.locator('#divergence').innerText(),
    /^Seed \d+\. (Identical so far \(\d+ tokens?\)|The texts diverge at token \d+)\. Sparse decodes at \d+\.\d\d× the dense speed\.$/);
  const arrivals = await page.evaluate(() => window.arrivals);
  assert.ok(new Set(arrivals).size >= 3, 'the two answers streamed in');
  // The panel follows the sparse side: opt-demo's shipped predictors skip most MLP neurons from token 1 on (token 0
  // comes from the dense prompt pass), and keep every head.
  assert.match(await page.locator('#summary').innerText(), /MLP skipped [5-9]\d% · heads skipped 0%/);
  assert.equal(await page.locator('#sparsity-mode').innerText(), '');
  const pixel = (x, y) => page.evaluate(([px, py]) =>
    [...document.getElementById('heat-mlp').getContext('2d').getImageData(px, py, 1, 1).data].slice(0, 3), [x, y]);
  assert.deepEqual(await pixel(2, 2), DENSE_COLOUR, 'token 0 was computed densely');
  for (let layer = 0; layer < 8; layer++) {
    assert.notDeepEqual(await pixel(8 + 2, layer * 12 + 2), DENSE_COLOUR, `token 1, layer ${layer} ran sparse`);
  }
  await page.locator('#side-sparse .tok').nth(1).hover();
  assert.doesNotMatch(await page.locator('#token-detail').innerText(), /dense/);
  await page.screenshot({ path: join(SCREENSHOTS, 'compare.png'), fullPage: true });
  assert.deepEqual(page.failures, []);
  await page.close();
});

test('a dropped connection is reported and the page reconnects', async () => {
  const page = await browser.newPage();
  const sockets = [];
  await page.routeWebSocket(/\/ws/, (ws) => {
    ws.connectToServer();
    sockets.push(ws);
  });
  await page.goto(URL);
  await connected(page);
  await sockets[0].close({ code: 1011, reason: 'test drop' });
  await page.locator('#banner', { hasText: /Connection to the server lost\. Reconnecting in/ }).waitFor({ timeout: 10_000 });
  assert.equal(await page.getAttribute('#connection', 'data-state'), 'waiting');
  await page.screenshot({ path: join(SCREENSHOTS, 'reconnecting.png') });
  await page.locator('#connection[data-state=open]').waitFor({ timeout: 30_000 });
  assert.equal(await page.isHidden('#banner'), true);
  assert.ok(sockets.length >= 2, 'a new WebSocket was opened');
  // The new connection works.
  await page.fill('input[name=max_tokens]', '4');
  await page.fill('#prompt', 'Hello again');
  await page.press('#prompt', 'Enter');
  await page.locator('.turn.assistant .status', { hasText: /finished|stopped at max tokens/ }).waitFor({ timeout: 60_000 });
  await page.close();
});

test('while the server cannot be reached, reconnection backs off exponentially', async () => {
  const page = await openPage();
  await connected(page);
  // The page's own Connection, pointed at a port nothing listens on: every handshake fails at once.
  const closedPort = await new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
  const waits = await page.evaluate(async (port) => {
    const { Connection } = await import('/js/connection.js');
    const connection = new Connection({ url: () => `ws://127.0.0.1:${port}/ws`, needsAuth: async () => false });
    const seen = [];
    await new Promise((resolve) => {
      connection.addEventListener('status', ({ detail }) => {
        if (detail.state !== 'waiting') return;
        seen.push(detail);
        if (seen.length === 3) resolve();
      });
      connection.connect();
    });
    clearTimeout(connection.timer);
    return seen;
  }, closedPort);
  assert.deepEqual(waits.map((w) => w.attempt), [1, 2, 3]);
  // 0.5 s, 1 s, 2 s, each with up to 20% jitter.
  waits.forEach((w, i) => {
    const base = 500 * 2 ** i;
    assert.ok(w.delayMs >= 0.8 * base && w.delayMs <= 1.2 * base, `attempt ${w.attempt} waits ${w.delayMs} ms`);
  });
  await page.close();
});

// Chosen per-layer figures replace the server's in its real (dense chat) token messages here, to check that the page
// draws exactly what it is given, and a queue-full refusal is answered in the server's words.
test('sparse figures are drawn per layer and server refusals are explained', async () => {
  const page = await browser.newPage();
  const skipped = (index) => Array.from({ length: 8 }, (_, layer) => ((layer + index) % 8) / 8);
  await page.routeWebSocket(/\/ws/, (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((text) => {
      const message = JSON.parse(text);
      if (message.type === 'generate' && message.messages?.[0].content === 'busy?') {
        ws.send(JSON.stringify({ type: 'error', id: message.id, error: { message: 'the server is at its queue limit; retry shortly',
          type: 'rate_limit_error', param: null, code: 'queue_full' } }));
      } else {
        server.send(text);
      }
    });
    server.onMessage((text) => {
      const message = JSON.parse(text);
      if (message.type === 'token') {
        message.sparsity = skipped(message.index);
        message.head_sparsity = skipped(message.index).map((s) => s / 2);
      }
      ws.send(JSON.stringify(message));
    });
  });
  await page.goto(URL);
  await connected(page);
  await page.fill('input[name=max_tokens]', '16');
  await page.fill('#prompt', 'Tell me about the harbour.');
  await page.press('#prompt', 'Enter');
  await page.locator('.turn.assistant .status', { hasText: /finished|stopped at max tokens/ }).waitFor({ timeout: 60_000 });
  // Token 0, layer 0 skipped nothing: the deep end; layer 4 skipped half: the middle of the ramp.
  const pixel = (x, y) => page.evaluate(([px, py]) =>
    [...document.getElementById('heat-mlp').getContext('2d').getImageData(px, py, 1, 1).data].slice(0, 3), [x, y]);
  assert.deepEqual(await pixel(2, 2), DENSE_COLOUR);
  assert.deepEqual(await pixel(2, 4 * 12 + 2), [159, 124, 157]);
  assert.match(await page.locator('#summary').innerText(), /MLP skipped 44% · heads skipped 22%/);
  assert.equal(await page.locator('#sparsity-mode').innerText(), '');
  await page.locator('.turn.assistant .tok').first().hover();
  assert.match(await page.locator('#token-detail').innerText(), /\b4\s+50%\s+75%/);
  await page.screenshot({ path: join(SCREENSHOTS, 'sparse-figures.png'), fullPage: true });

  await page.click('#new-chat');
  await page.fill('#prompt', 'busy?');
  await page.press('#prompt', 'Enter');
  await page.locator('.turn.assistant .status.error-text', { hasText: 'The server is busy: its queue is full.' }).waitFor();
  await page.close();
});

test('a too long prompt gets a clear message', async () => {
  const page = await openPage();
  await connected(page);
  await page.fill('#prompt', 'the river and the city '.repeat(60));
  await page.press('#prompt', 'Enter');
  const status = page.locator('.turn.assistant .status.error-text');
  await status.waitFor({ timeout: 30_000 });
  assert.match(await status.innerText(), /The prompt is too long\. .*at most \d+ are accepted.*Start a new chat or shorten it/);
  await page.close();
});

test('a server with API keys asks for one, refuses a wrong one and works with the right one', async () => {
  const page = await openPage(KEYED_URL);
  await page.locator('#connection[data-state=auth]').waitFor({ timeout: 30_000 });
  assert.equal(await page.isVisible('#auth'), true);
  assert.match(await page.locator('#banner').innerText(), /needs an API key/);
  await page.fill('#api-key', 'wrong');
  await page.press('#api-key', 'Enter');
  await page.locator('#auth-error', { hasText: 'The server refused this key.' }).waitFor();
  await page.fill('#api-key', process.env.DEJAVU_KEY);
  await page.press('#api-key', 'Enter');
  await connected(page);
  assert.equal(await page.isHidden('#auth'), true);
  await page.fill('input[name=max_tokens]', '4');
  await page.fill('#prompt', 'Hello');
  await page.press('#prompt', 'Enter');
  await page.locator('.turn.assistant .status', { hasText: /finished|stopped at max tokens/ }).waitFor({ timeout: 60_000 });
  await page.close();
});

test('on a phone-sized screen the panel is a drawer and the page does not scroll sideways', async () => {
  const page = await openPage(URL, { width: 390, height: 844 });
  await connected(page);
  assert.equal(await page.isHidden('#panel'), true);
  await page.fill('#prompt', 'A short note about boats.');
  await page.press('#prompt', 'Enter');
  await page.locator('.turn.assistant .status', { hasText: /finished|stopped at max tokens/ }).waitFor({ timeout: 60_000 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than the screen`);
  await page.screenshot({ path: join(SCREENSHOTS, 'phone.png'), fullPage: true });
  // Keyboard: the settings drawer opens from the header and moves the focus into it.
  await page.focus('#toggle-panel');
  await page.keyboard.press('Enter');
  assert.equal(await page.isVisible('#panel'), true);
  assert.equal(await page.evaluate(() => document.activeElement.name), 'temperature');
  await page.screenshot({ path: join(SCREENSHOTS, 'phone-settings.png') });
  await page.close();
});
