// The OpenAI Agents JS SDK's RealtimeSession (transport 'websocket', unchanged) against a live
// `omni serve`, in one session: a server-VAD turn, a manual turn, an interruption, a cancel, a
// text item. Prints one JSON line ({"ok": ..., "errors": [...], "replies": N, ...}); exits 0 only
// if ok.
//
//   node drive.mjs ws://127.0.0.1:PORT/v1/realtime?model=minicpm-o-2.6 speech_24k.pcm
//   (or OMNI_REALTIME_URL / OMNI_SPEECH_PCM): the speech as raw PCM16 LE, 24 kHz, mono.
import { readFileSync } from 'node:fs';

import { RealtimeAgent, RealtimeSession, tool } from '@openai/agents-realtime';
import { z } from 'zod';
// The SDK's own server-event schemas: an event of a type it knows that fails them is dropped by
// the SDK without a word (it is treated as an unknown event), so the driver checks each one.
import { realtimeServerEventSchema } from './node_modules/@openai/agents-realtime/dist/openaiRealtimeEvents.mjs';

const STEP_TIMEOUT_MS = 30_000; // generous: only there so a broken server fails instead of hanging
const TOTAL_TIMEOUT_MS = 110_000;
const RATE = 24000;
const CHUNK_MS = 40;
const CHUNK_BYTES = (2 * RATE * CHUNK_MS) / 1000;

const url = process.argv[2] ?? process.env.OMNI_REALTIME_URL;
const pcmPath = process.argv[3] ?? process.env.OMNI_SPEECH_PCM;
if (!url || !pcmPath) {
  console.error('usage: node drive.mjs WS_URL SPEECH_PCM16_24K_PATH');
  process.exit(2);
}
const speech = readFileSync(pcmPath);
const SDK_VERSION = JSON.parse(readFileSync(new URL('./node_modules/@openai/agents-realtime/package.json', import.meta.url))).version;
const KNOWN_TYPES = new Set(realtimeServerEventSchema.options.map((o) => o.shape.type.value));

const log = []; // server events (raw JSON) and {type: 'audio', response_id} for each audio event
const sent = []; // what the SDK put on the wire, appends abbreviated
const errors = []; // the session's 'error' events, described
const rejected = []; // server events the SDK's schemas reject
const lostRaces = []; // replies that ended by themselves before a stop could land (see stoppedReply)
const audio = new Map(); // response id -> {bytes, peak}
const steps = [];
let waiters = [];
let closed = false;

function notify() {
  for (const w of [...waiters]) w();
}

function clip(s, n = 600) {
  return s.length > n ? `${s.slice(0, n)}...` : s;
}

function describeError(payload) {
  const e = payload?.error ?? payload;
  if (e && e.type === 'error' && e.error) { // a server `error` event
    const cause = e.error.event_id && sent.find((s) => s.event_id === e.error.event_id);
    return { server_error: e.error, caused_by: cause?.json, last_sent: sent.slice(-4).map((s) => s.json) };
  }
  if (e instanceof Error) return { exception: `${e.name}: ${e.message}` };
  if (e && typeof e === 'object' && 'message' in e) return { event: String(e.message) }; // ws ErrorEvent
  try { return { other: clip(JSON.stringify(e)) }; } catch { return { other: String(e) }; }
}

function mark() { return log.length; }

function types(since = 0) {
  return log.slice(since).map((e) => e.type).filter((t) => t !== 'audio' && !t.endsWith('.delta'));
}

/** The first logged event at or after `since` that `pred` accepts; fails at a session error. */
function waitFor(pred, since, what, timeoutMs = STEP_TIMEOUT_MS, tolerated = () => false) {
  const errorsBefore = errors.length;
  return new Promise((resolve, reject) => {
    let timer;
    const check = () => {
      const found = log.slice(since).find(pred);
      let failure = null;
      if (found) resolve(found);
      else if (errors.slice(errorsBefore).some((e) => !tolerated(e))) failure = `error event while waiting for ${what}`;
      else if (closed) failure = `connection closed before ${what}`;
      else return;
      clearTimeout(timer);
      waiters = waiters.filter((w) => w !== check);
      if (failure) reject(new Error(`${failure}; server events: ${types(since).slice(-30).join(' ')}`));
    };
    timer = setTimeout(() => {
      waiters = waiters.filter((w) => w !== check);
      reject(new Error(`no ${what} in ${timeoutMs / 1000} s; server events: ${types(since).slice(-30).join(' ')}`));
    }, timeoutMs);
    waiters.push(check);
    check();
  });
}

const ofType = (t) => (e) => e.type === t;

/** The next response.done after `since`, with the speech its audio events carried. */
async function reply(since, what, tolerated = undefined) {
  const done = await waitFor(ofType('response.done'), since, `response.done (${what})`, STEP_TIMEOUT_MS, tolerated);
  const r = done.response;
  const a = audio.get(r.id) ?? { bytes: 0, peak: 0 };
  return { id: r.id, status: r.status, reason: r.status_details?.reason ?? null,
    items: (r.output ?? []).map((o) => o.id), audio_ms: Math.round((a.bytes / 2 / RATE) * 1000),
    peak: a.peak };
}

function expect(cond, msg) {
  if (!cond) throw new Error(msg);
}

function expectSpeech(r, what) {
  expect(r.audio_ms > 0 && r.peak > 0, `${what}: no speech in the audio events (${JSON.stringify(r)})`);
}

function chunksOf(buf) {
  const out = [];
  for (let i = 0; i < buf.length; i += CHUNK_BYTES) {
    const c = buf.subarray(i, Math.min(i + CHUNK_BYTES, buf.length));
    out.push(c.buffer.slice(c.byteOffset, c.byteOffset + c.byteLength)); // sendAudio takes an ArrayBuffer
  }
  return out;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function step(name, fn) {
  const t0 = Date.now();
  try {
    const detail = await fn();
    steps.push({ name, ok: true, s: (Date.now() - t0) / 1000, ...(detail ?? {}) });
  } catch (e) {
    steps.push({ name, ok: false, s: (Date.now() - t0) / 1000, error: e.message });
    throw e;
  }
}

const toolRuns = []; // what the function tool was called with
const MANUAL = { audio: { input: { turnDetection: null } } };
// A function tool, the SDK's way (a zod schema); its call is forced in step 6 (the random tiny
// model never opens one by itself), and it sets the session back to "auto" so the answer to its
// output is spoken. Until then tool_choice is the SDK's default, "auto", and it is never called.
const getWeather = tool({
  name: 'get_weather',
  description: 'The weather forecast for a city.',
  parameters: z.object({ city: z.enum(['Paris', 'Rome', 'Oslo']), days: z.number().int().min(1).max(7) }),
  execute: async ({ city, days }) => {
    toolRuns.push({ city, days });
    transport.updateSessionConfig({ ...MANUAL, toolChoice: 'auto' });
    return `Sunny in ${city} for the next ${days} days.`;
  },
});

const session = new RealtimeSession(new RealtimeAgent({ name: 'omni', instructions: 'Answer briefly.', tools: [getWeather] }), {
  transport: 'websocket',
  model: 'minicpm-o-2.6',
});

session.on('error', (ev) => { errors.push(describeError(ev)); notify(); });
session.on('audio', (ev) => {
  const pcm = new Int16Array(ev.data, 0, Math.floor(ev.data.byteLength / 2));
  let peak = 0;
  for (const s of pcm) peak = Math.max(peak, Math.abs(s));
  const a = audio.get(ev.responseId) ?? { bytes: 0, peak: 0 };
  a.bytes += ev.data.byteLength;
  a.peak = Math.max(a.peak, peak);
  audio.set(ev.responseId, a);
  log.push({ type: 'audio', response_id: ev.responseId });
  notify();
});
const transport = session.transport;
transport.on('*', (raw) => {
  if (KNOWN_TYPES.has(raw.type)) {
    const r = realtimeServerEventSchema.safeParse(raw);
    if (!r.success) {
      rejected.push({ type: raw.type, issues: r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`),
        event: clip(JSON.stringify(raw, (k, v) => (k === 'delta' || k === 'audio') && typeof v === 'string' ? `<${v.length} chars>` : v)) });
    }
  }
  log.push(raw);
  notify();
});
transport.on('connection_change', (status) => {
  if (status === 'connecting') {
    // Record what the SDK sends, without changing it.
    const ws = transport.connectionState.websocket;
    const send = ws.send.bind(ws);
    ws.send = (data, ...rest) => {
      const ev = JSON.parse(data);
      sent.push({ type: ev.type, event_id: ev.event_id,
        json: ev.type === 'input_audio_buffer.append' ? `{"type":"input_audio_buffer.append","audio":"<${ev.audio.length} chars>"}` : clip(data) });
      return send(data, ...rest);
    };
  } else if (status === 'disconnected') {
    closed = true;
    notify();
  }
});

/** Speech as a manual turn, the SDK's way: appends, the last with commit, then a response. */
async function manualTurn(what) {
  const since = mark();
  const chunks = chunksOf(speech);
  chunks.forEach((c, i) => session.sendAudio(c, { commit: i === chunks.length - 1 }));
  transport.requestResponse();
  await waitFor(ofType('input_audio_buffer.committed'), since, `input_audio_buffer.committed (${what})`);
  const r = await reply(since, what);
  expect(['completed', 'incomplete'].includes(r.status), `${what}: status ${r.status} (${r.reason})`);
  expectSpeech(r, what);
  return r;
}

/** A text item, and at its reply's first audio `stop()`: the reply ends cancelled. The random
 * model sometimes ends a reply by itself within its first burst of audio, before the stop lands:
 * then the server answers the late response.cancel (if the SDK sent one) as OpenAI does, with a
 * `response_cancel_not_active` error. That try is set aside (`lost_races`, that one error with
 * it) and another made, up to `tries`; any other error still counts. */
async function stoppedReply(text, stop, what, tries = 4) {
  for (let i = 1; ; i++) {
    const since = mark();
    const errorsBefore = errors.length;
    session.sendMessage(text);
    await waitFor(ofType('audio'), since, `the first audio (${what})`);
    stop();
    // a lost race's error may come before that reply's response.done: judged below, by its status
    const r = await reply(since, what, (e) => e.server_error?.code === 'response_cancel_not_active');
    if (r.status !== 'cancelled' && i < tries) { // it ended by itself (completed, or at the token cap)
      await sleep(300); // what the late stop causes (an error, a truncate) lands first
      const late = errors.slice(errorsBefore);
      const race = late.filter((e) => e.server_error?.code === 'response_cancel_not_active');
      errors.splice(errorsBefore, late.length, ...late.filter((e) => !race.includes(e)));
      lostRaces.push({ step: what, reply: r.id, audio_ms: r.audio_ms, errors: race.map((e) => e.server_error) });
      continue;
    }
    expect(r.status === 'cancelled', `${what}: status ${r.status} (${r.reason}), not cancelled (try ${i})`);
    expectSpeech(r, `${what} (before it was stopped)`);
    return { since, r: { ...r, tries: i } };
  }
}

let failure = null;
const overall = setTimeout(() => finish(`the driver ran past ${TOTAL_TIMEOUT_MS / 1000} s`), TOTAL_TIMEOUT_MS);

async function run() {
  await step('connect', async () => {
    const since = mark();
    await Promise.race([
      session.connect({ apiKey: 'unused', url }),
      sleep(STEP_TIMEOUT_MS).then(() => { throw new Error('connect timed out'); }),
    ]);
    await waitFor(ofType('session.updated'), since, 'session.updated');
  });

  // 1. The SDK's default turn detection (semantic_vad), speech streamed in real time.
  await step('server_vad_turn', async () => {
    const since = mark();
    const t0 = Date.now();
    const chunks = chunksOf(speech);
    for (let i = 0; i < chunks.length; i++) {
      session.sendAudio(chunks[i]);
      await sleep(Math.max(0, t0 + (i + 1) * CHUNK_MS - Date.now())); // paced, no drift
    }
    await waitFor(ofType('input_audio_buffer.speech_started'), since, 'input_audio_buffer.speech_started');
    await waitFor(ofType('input_audio_buffer.committed'), since, 'input_audio_buffer.committed');
    const r = await reply(since, 'server-VAD reply');
    expect(['completed', 'incomplete'].includes(r.status), `server-VAD reply: status ${r.status} (${r.reason})`);
    expectSpeech(r, 'server-VAD reply');
    return { reply: r };
  });

  // 2. Turn detection off (the transport's updateSessionConfig), then a manual turn.
  await step('manual_turn', async () => {
    const since = mark();
    transport.updateSessionConfig({ audio: { input: { turnDetection: null } } });
    await waitFor((e) => e.type === 'session.updated' && e.session?.audio?.input?.turn_detection == null,
      since, 'session.updated with turn_detection null');
    return { reply: await manualTurn('manual reply') };
  });

  // 3. session.interrupt() at a reply's first audio: a truncate and a cancel (turn detection is
  // off), then the SDK retrieves the truncated item; the next turn is still answered.
  await step('interrupt', async () => {
    const { since, r } = await stoppedReply('Tell me a long story about the sea.', () => session.interrupt(),
      'interrupted reply');
    expect(['client_cancelled', 'turn_detected'].includes(r.reason), `interrupted reply: reason ${r.reason}`);
    const ofItem = (t) => (e) => e.type === t && r.items.includes(e.item_id ?? e.item?.id);
    await waitFor(ofItem('conversation.item.truncated'), since, 'conversation.item.truncated');
    await waitFor(ofItem('conversation.item.retrieved'), since, 'conversation.item.retrieved');
    return { reply: r, next: await manualTurn('reply after the interruption') };
  });

  // 4. A cancel mid-reply (response.cancel through the transport), then a new turn.
  await step('cancel', async () => {
    const { r } = await stoppedReply('What is the weather like?', () => transport.sendEvent({ type: 'response.cancel' }),
      'cancelled reply');
    expect(r.reason === 'client_cancelled', `cancelled reply: reason ${r.reason}`);
    return { reply: r, next: await manualTurn('reply after the cancel') };
  });

  // 5. A text item (sendMessage: conversation.item.create + response.create), answered with speech.
  await step('text_item', async () => {
    const since = mark();
    session.sendMessage('Hello, how are you?');
    const r = await reply(since, 'reply to a text item');
    expect(['completed', 'incomplete'].includes(r.status), `reply to a text item: status ${r.status} (${r.reason})`);
    expectSpeech(r, 'reply to a text item');
    return { reply: r };
  });

  // 6. A function tool round trip: tool_choice "required" (one call), the SDK runs the tool from
  // the completed call item, sends its output and a response.create; the answer is spoken.
  await step('function_tool', async () => {
    const since = mark();
    transport.updateSessionConfig({ ...MANUAL, toolChoice: 'required', parallelToolCalls: false });
    await waitFor((e) => e.type === 'session.updated' && e.session?.tool_choice === 'required', since,
      'session.updated with tool_choice required');
    const asked = mark();
    session.sendMessage('What is the weather in Paris this week?');
    const call = await waitFor((e) => e.type === 'response.output_item.done' && e.item?.type === 'function_call',
      asked, 'a function_call item done');
    expect(call.item.status === 'completed', `call item ${call.item.status}`);
    const args = JSON.parse(call.item.arguments);
    expect(['Paris', 'Rome', 'Oslo'].includes(args.city) && args.days >= 1 && args.days <= 7,
      `arguments outside the schema: ${call.item.arguments}`);
    await waitFor((e) => e.type === 'conversation.item.added' && e.item?.type === 'function_call_output' &&
      e.item.call_id === call.item.call_id, asked, 'the function_call_output');
    const answer = await waitFor((e) => e.type === 'response.done' && e.response.id !== call.response_id &&
      (e.response.output ?? []).some((o) => o.type === 'message'), asked, 'the answer');
    const a = audio.get(answer.response.id) ?? { bytes: 0, peak: 0 };
    expect(a.peak > 0, 'the answer after the tool output is not spoken');
    // The tool's own update back to "auto" can reach the server after the SDK's response.create for
    // the output (the SDK orders the two itself): that response is then still "required", a second
    // call, run again; each run must have had valid arguments, the first this call's.
    expect(toolRuns.length >= 1 && toolRuns[0].city === args.city &&
      toolRuns.every((t) => ['Paris', 'Rome', 'Oslo'].includes(t.city) && t.days >= 1 && t.days <= 7),
    `tool runs: ${JSON.stringify(toolRuns)}`);
    return { call: call.item, answer: answer.response.id };
  });
  await sleep(300); // late events (a retrieve's answer, an error) still count
}

let finished = false;
function finish(fail) {
  if (finished) return;
  finished = true;
  clearTimeout(overall);
  failure = failure ?? fail ?? null;
  // replies: the responses with a message (a call-only response has no speech by design)
  const done = log.filter((e) => e.type === 'response.done' && (e.response.output ?? []).some((o) => o.type === 'message'))
    .map((e) => e.response);
  const withAudio = done.filter((r) => (audio.get(r.id)?.peak ?? 0) > 0);
  const ok = !failure && errors.length === 0 && rejected.length === 0 && done.length > 0 &&
    withAudio.length === done.length;
  const out = {
    ok, errors, rejected_server_events: rejected, replies: done.length, replies_with_audio: withAudio.length,
    tool_runs: toolRuns, lost_races: lostRaces, failure, steps, sdk: `@openai/agents-realtime@${SDK_VERSION}`, node: process.version,
    server_event_types: ok ? undefined : types().slice(-40),
    client_events_sent: [...new Set(sent.map((s) => s.type))],
  };
  try { session.close(); } catch { /* closing is best effort */ }
  process.stdout.write(`${JSON.stringify(out)}\n`, () => process.exit(ok ? 0 : 1));
}

run().then(() => finish(), (e) => finish(e.message));
