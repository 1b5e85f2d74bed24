// Checks the OpenAI-compatible API with the official `openai` npm client against a running dejavu server.
// Usage: DEJAVU_URL=http://127.0.0.1:8080 [DEJAVU_API_KEY=...] node openai-client.test.mjs
import assert from 'node:assert/strict';
import test from 'node:test';
import OpenAI from 'openai';

const baseURL = (process.env.DEJAVU_URL ?? 'http://127.0.0.1:8080') + '/v1';
const client = new OpenAI({baseURL, apiKey: process.env.DEJAVU_API_KEY ?? 'none', maxRetries: 0, timeout: 60_000});

async function servedModel() {
  const models = await client.models.list();
  assert.equal(models.data.length, 1);
  return models.data[0].id;
}

test('lists the served model', async () => {
  const model = await servedModel();
  assert.match(model, /\S/);
});

test('completion, not streamed: text, usage and finish reason', async () => {
  const model = await servedModel();
  const completion = await client.completions.create({model, prompt: 'In the beginning', max_tokens: 8, temperature: 0});
  assert.equal(completion.object, 'text_completion');
  assert.equal(completion.choices.length, 1);
  assert.ok(['stop', 'length'].includes(completion.choices[0].finish_reason));
  assert.ok(completion.usage.prompt_tokens > 1);
  assert.ok(completion.usage.completion_tokens >= 1 && completion.usage.completion_tokens <= 8);
  assert.equal(completion.usage.total_tokens, completion.usage.prompt_tokens + completion.usage.completion_tokens);
});

test('completion, streamed: the chunks add up to the same greedy text', async () => {
  const model = await servedModel();
  const whole = await client.completions.create({model, prompt: 'The king said', max_tokens: 12, temperature: 0});
  const stream = await client.completions.create({model, prompt: 'The king said', max_tokens: 12, temperature: 0,
    stream: true, stream_options: {include_usage: true}});
  let text = '';
  let finish = null;
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      text += choice.text;
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  }
  assert.equal(text, whole.choices[0].text);
  assert.equal(finish, whole.choices[0].finish_reason);
  assert.deepEqual(usage, whole.usage);
});

test('chat, not streamed: an assistant message', async () => {
  const model = await servedModel();
  const chat = await client.chat.completions.create({model, max_tokens: 10, temperature: 0, seed: 7,
    messages: [{role: 'system', content: 'You answer briefly.'}, {role: 'user', content: 'What is a king?'}]});
  assert.equal(chat.object, 'chat.completion');
  assert.equal(chat.choices[0].message.role, 'assistant');
  assert.equal(typeof chat.choices[0].message.content, 'string');
  assert.ok(!chat.choices[0].message.content.includes('\nUser:'));
  assert.ok(['stop', 'length'].includes(chat.choices[0].finish_reason));
});

test('chat, streamed: role first, then content deltas equal to the whole answer', async () => {
  const model = await servedModel();
  const request = {model, max_tokens: 10, temperature: 0, messages: [{role: 'user', content: 'Hello there'}]};
  const whole = await client.chat.completions.create(request);
  const stream = await client.chat.completions.create({...request, stream: true});
  let role = null;
  let content = '';
  let finish = null;
  for await (const chunk of stream) {
    const choice = chunk.choices[0];
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (choice.delta.role) role = choice.delta.role;
    if (choice.delta.content) content += choice.delta.content;
    if (choice.finish_reason) finish = choice.finish_reason;
  }
  assert.equal(role, 'assistant');
  assert.equal(content, whole.choices[0].message.content);
  assert.equal(finish, whole.choices[0].finish_reason);
});

test('a bad parameter is a 400 the client reports as BadRequestError', async () => {
  const model = await servedModel();
  await assert.rejects(client.completions.create({model, prompt: 'x', top_p: 3}), (error) => {
    assert.ok(error instanceof OpenAI.BadRequestError);
    assert.equal(error.status, 400);
    assert.equal(error.param, 'top_p');
    return true;
  });
});
