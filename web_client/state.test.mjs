// The call state machine (state.js) driven by scripted timelines: every transition asserted on
// the phase, the reply bookkeeping and the effects it asks for. Run: node --test web_client/
// (tests/test_web_state.py runs it in the suite).
import { test } from "node:test";
import assert from "node:assert/strict";
import { reduce, initialState, view, replyOf, SILENT_MS, RETIRED_MAX, PLAYOUT_MARGIN_MS, TIMINGS_WAIT_MS } from "./state.js";

const RATE = 24000;

/** A page under test: dispatches events, keeps every effect, and a clock in ms. */
function page(transport = "websocket") {
  const p = { s: initialState(), fx: [], now: 0 };
  p.send = (ev) => {
    const next = reduce(p.s, { now: p.now, ...ev });
    if (next !== p.s) p.fx.push(...next.effects);
    p.s = next;
    return next.effects;
  };
  p.server = (event, extra = {}) => p.send({ type: "server", attempt: p.s.attempt, event, ...extra });
  p.player = (msg) => p.send({ type: "player", msg });
  p.send({ type: "start" });
  p.send({ type: "connected", attempt: p.s.attempt, transport, rtcFailed: false, at: "t0" });
  return p;
}

const kinds = (fx) => fx.map((f) => (f.do === "player" ? `player:${f.cmd}` : f.do === "send" ? `send:${f.msg}` : f.do));
const audio = (id, n) => [{ type: "response.output_audio.delta", response_id: id, item_id: `item_${id}`, delta: "" },
  { samples: new Float32Array(n) }];

/** One spoken turn up to the reply being heard; returns the reply id. */
function turnHeard(p, id, { samples = RATE } = {}) {
  p.server({ type: "input_audio_buffer.speech_started", item_id: `u_${id}`, audio_start_ms: 1000 });
  p.now += 1500;
  p.server({ type: "input_audio_buffer.speech_stopped", item_id: `u_${id}`, audio_end_ms: 2500 });
  p.now += 300;
  p.server({ type: "response.created", response: { id } });
  p.server(...audio(id, samples));
  p.now += 200;
  p.player({ ev: "started", id });
  return id;
}

test("start, connect: connecting then listening, the session is sent", () => {
  let s = initialState();
  assert.equal(view(s).badge, "idle");
  s = reduce(s, { type: "start" });
  assert.equal(s.phase, "connecting");
  assert.deepEqual(kinds(s.effects), ["clearError", "open"]);
  assert.ok(view(s).calling && !view(s).connected);
  s = reduce(s, { type: "connected", attempt: s.attempt, transport: "websocket", at: "t", now: 5 });
  assert.equal(s.phase, "listening");
  assert.deepEqual(kinds(s.effects), ["send:session"]);
  assert.equal(s.link, "WebSocket");
  assert.ok(view(s).connected && !view(s).interruptible);
});

test("a full turn: speaking, thinking, the reply heard, back to listening, its entry gone", () => {
  const p = page();
  p.server({ type: "input_audio_buffer.speech_started", item_id: "u1", audio_start_ms: 1000 });
  assert.equal(p.s.phase, "user_speaking");
  p.now = 100;
  const stop = p.server({ type: "input_audio_buffer.speech_stopped", item_id: "u1", audio_end_ms: 2600 });
  assert.equal(p.s.phase, "thinking");
  assert.deepEqual(stop.find((f) => f.do === "userTurn"), { do: "userTurn", itemId: "u1", durationMs: 1600 });
  p.now = 150;
  p.server({ type: "response.created", response: { id: "r1" } });
  assert.equal(p.s.current, "r1");
  assert.ok(view(p.s).interruptible);
  const push = p.server(...audio("r1", 4800));
  assert.deepEqual(kinds(push), ["player:push"]);
  assert.equal(replyOf(p.s, "r1").received, 4800);
  assert.equal(replyOf(p.s, "r1").itemId, "item_r1");
  p.server({ type: "response.output_audio_transcript.delta", response_id: "r1", delta: "hi" });
  assert.deepEqual(p.s.effects, [{ do: "text", id: "r1", delta: "hi" }]);
  p.now = 400;
  const started = p.player({ ev: "started", id: "r1" });
  assert.equal(p.s.phase, "speaking");
  assert.equal(view(p.s).badge, "speaking");
  assert.deepEqual(started, [{ do: "firstAudio", id: "r1", ms: 300 }]);   // from the end of speech
  const done = p.server({ type: "response.done", response: { id: "r1", status: "completed" } });
  assert.deepEqual(kinds(done), ["player:end", "turnStatus", "meta"]);
  assert.equal(done[2].text, "first audio 300 ms after you stopped");
  assert.equal(p.s.current, null);
  assert.equal(p.s.phase, "speaking");                                   // still playing
  assert.ok(p.s.responses.r1, "kept while its audio plays");
  p.player({ ev: "played", id: "r1", samples: 4800 });
  p.player({ ev: "ended", id: "r1", samples: 4800 });
  assert.equal(p.s.phase, "listening");
  assert.equal(p.s.audible, null);
  assert.deepEqual(Object.keys(p.s.responses), []);
  assert.equal(replyOf(p.s, "r1").played, 4800);                        // retired, still readable
  p.server({ type: "response.omni.timings", response_id: "r1", timings: { first_audio_ms: 90 } });
  assert.deepEqual(p.s.effects, [{ do: "timings", id: "r1", timings: { first_audio_ms: 90 } }]);
  assert.ok(!view(p.s).interruptible);
});

test("barge-in by speech: the reply is dropped at once, what was heard is truncated", () => {
  const p = page();
  turnHeard(p, "r1", { samples: 3 * RATE });
  assert.equal(p.s.phase, "speaking");
  const cut = p.server({ type: "input_audio_buffer.speech_started", item_id: "u2", audio_start_ms: 9000 });
  assert.deepEqual(kinds(cut), ["userTurn", "meta", "player:drop"]);    // no cancel: the server does it
  assert.equal(p.s.phase, "user_speaking");
  assert.equal(replyOf(p.s, "r1").dead, true);
  assert.equal(p.s.audible, null);
  const ack = p.player({ ev: "dropped", id: "r1", samples: RATE / 2 });
  assert.deepEqual(ack, [{ do: "truncate", id: "r1", itemId: "item_r1", audioEndMs: 500 }]);
  // resampling may count a few more samples played than were received: never past the audio sent
  turnHeard(p, "r2", { samples: 2400 });
  p.send({ type: "interrupt" });
  assert.equal(p.player({ ev: "dropped", id: "r2", samples: 2410 })[0].audioEndMs, 100);
});

test("Interrupt: the badge is listening at once and response.cancel names the reply", () => {
  const p = page();
  turnHeard(p, "r1");
  const fx = p.send({ type: "interrupt" });
  assert.deepEqual(kinds(fx), ["send:cancel", "meta", "player:drop"]);
  assert.equal(fx[0].id, "r1");
  assert.equal(p.s.phase, "listening");
  assert.equal(view(p.s).badge, "listening");
  assert.ok(!view(p.s).interruptible);
  assert.equal(reduce(p.s, { type: "interrupt" }), p.s, "nothing left to interrupt");
});

test("a cancelled reply: late audio, text and player reports are ignored, then it is pruned", () => {
  const p = page();
  turnHeard(p, "r1", { samples: 1000 });
  p.send({ type: "interrupt" });
  const late = p.server(...audio("r1", 5000));
  assert.deepEqual(late, [], "no push for a dead reply");
  assert.equal(replyOf(p.s, "r1").received, 1000);
  assert.deepEqual(p.server({ type: "response.output_audio_transcript.delta", response_id: "r1", delta: "x" }), []);
  p.player({ ev: "started", id: "r1" });                                  // a report already in flight
  assert.equal(p.s.phase, "listening");
  assert.equal(p.s.audible, null);
  p.player({ ev: "dropped", id: "r1", samples: 800 });
  assert.ok(p.s.responses.r1, "kept until the server's response.done");
  const done = p.server({ type: "response.done", response: { id: "r1", status: "cancelled" } });
  assert.deepEqual(done.find((f) => f.do === "meta"),
    { do: "meta", id: "r1", text: "interrupted · first audio 500 ms after you stopped", cut: true });
  assert.equal(p.s.phase, "listening");
  assert.deepEqual(Object.keys(p.s.responses), []);
  assert.deepEqual(p.server({ type: "response.omni.timings", response_id: "r1", timings: {} }), [],
    "a cut reply's timings are not counted");
  assert.deepEqual(p.server(...audio("r1", 10)), [], "still stale once retired");
});

test("a typed message cuts in like speech and counts latency from the send", () => {
  const p = page();
  turnHeard(p, "r1");
  p.now = 10_000;
  const fx = p.send({ type: "text", text: "  hello " });
  assert.deepEqual(kinds(fx), ["send:cancel", "meta", "player:drop", "userText", "send:text", "send:create"]);
  assert.equal(fx[4].text, "hello");
  assert.equal(p.s.phase, "thinking");
  p.server({ type: "response.created", response: { id: "r2" } });
  p.server(...audio("r2", 2000));
  p.now = 10_250;
  assert.deepEqual(p.player({ ev: "started", id: "r2" }), [{ do: "firstAudio", id: "r2", ms: 250 }]);
  assert.equal(reduce(p.s, { type: "text", text: "   ", now: 1 }), p.s, "a blank message is not sent");
});

test("a text-only reply on the WebSocket returns to listening at response.done", () => {
  const p = page();
  p.send({ type: "text", text: "hi" });
  p.server({ type: "response.created", response: { id: "r1" } });
  p.server({ type: "response.output_text.delta", response_id: "r1", delta: "yo" });
  p.server({ type: "response.done", response: { id: "r1", status: "completed" } });
  assert.equal(p.s.phase, "listening");
  assert.deepEqual(Object.keys(p.s.responses), []);
});

test("per-reply entries are pruned: many turns, some cut, leave nothing behind", () => {
  const p = page();
  for (let i = 0; i < 300; i++) {
    const id = turnHeard(p, `r${i}`, { samples: 480 });
    if (i % 3 === 0) {                                                    // the user cuts in
      p.server({ type: "input_audio_buffer.speech_started", item_id: `x${i}`, audio_start_ms: 0 });
      p.player({ ev: "dropped", id, samples: 100 });
      p.server({ type: "response.done", response: { id, status: "cancelled" } });
      p.server({ type: "input_audio_buffer.speech_stopped", item_id: `x${i}`, audio_end_ms: 10 });
    } else {
      p.server({ type: "response.done", response: { id, status: "completed" } });
      p.player({ ev: "ended", id, samples: 480 });
    }
    p.server({ type: "response.omni.timings", response_id: id, timings: {} });
  }
  assert.deepEqual(Object.keys(p.s.responses), []);
  assert.equal(p.s.retired.length, RETIRED_MAX);
  assert.deepEqual(p.s.retired.map((r) => r.id).at(-1), "r299");
  assert.equal(replyOf(p.s, "r0"), null, "the oldest are forgotten");
  assert.equal(p.s.speech, null);
  assert.equal(p.fx.filter((f) => f.do === "truncate").length, 100);
});

test("a reply whose 'ended' never came is over once the player starts the next one", () => {
  const p = page();
  turnHeard(p, "r1");
  p.server({ type: "response.done", response: { id: "r1", status: "completed" } });
  p.player({ ev: "ended", id: "r1", samples: RATE });
  p.send({ type: "text", text: "next" });
  p.server({ type: "response.created", response: { id: "r2" } });
  p.server(...audio("r2", 100));
  p.server({ type: "response.done", response: { id: "r2", status: "completed" } });   // no "ended" for r2
  p.server({ type: "response.created", response: { id: "r3" } });                 // nothing cut it
  p.server(...audio("r3", 100));
  assert.deepEqual(Object.keys(p.s.responses), ["r2", "r3"]);
  p.player({ ev: "started", id: "r3" });
  assert.deepEqual(Object.keys(p.s.responses), ["r3"]);
  assert.equal(replyOf(p.s, "r2").audio, "over");
});

test("connection lost: error phase, everything cut and released, late events ignored", () => {
  const p = page();
  turnHeard(p, "r1");
  const attempt = p.s.attempt;
  const fx = p.send({ type: "lost", attempt, info: { code: 1006 } });
  assert.deepEqual(kinds(fx), ["error", "meta", "player:drop", "teardown"]);
  assert.equal(p.s.phase, "error");
  assert.equal(view(p.s).badge, "error");
  assert.equal(p.s.link, "disconnected");
  assert.equal(p.s.transport, null);
  assert.ok(!view(p.s).calling && !view(p.s).connected && !view(p.s).interruptible);
  assert.deepEqual(Object.keys(p.s.responses), []);
  const before = p.s;
  assert.equal(reduce(p.s, { type: "server", attempt, event: { type: "omni.heartbeat" }, now: 1 }), before);
  assert.equal(reduce(p.s, { type: "lost", attempt, info: {} }), before, "lost once");
  p.send({ type: "reconnect" });
  assert.equal(p.s.phase, "connecting");
  assert.equal(p.s.link, "disconnected", "until the new call is up");
  p.send({ type: "connected", attempt: p.s.attempt, transport: "websocket", at: "t1" });
  assert.equal(p.s.phase, "listening");
  const up = p.s;                                              // the old call's transport, still talking
  assert.equal(reduce(up, { type: "server", attempt, event: { type: "response.created", response: { id: "old" } }, now: 2 }), up);
  assert.equal(reduce(up, { type: "lost", attempt, info: {} }), up);
});

test("a silent server is lost after SILENT_MS; heartbeats keep it alive", () => {
  const p = page();
  p.now = SILENT_MS - 1;
  assert.equal(reduce(p.s, { type: "tick", now: p.now }), p.s);
  p.server({ type: "omni.heartbeat" });
  p.now += SILENT_MS;
  assert.equal(p.send({ type: "tick" }).length, 0);
  p.now += 2;
  const fx = p.send({ type: "tick" });
  assert.deepEqual(fx[0], { do: "error", lost: { silent: true } });
  assert.equal(p.s.phase, "error");
  p.send({ type: "dismiss" });
  assert.equal(p.s.phase, "idle");
});

test("hang-up during connecting: the attempt's late outcome is ignored", () => {
  let s = reduce(initialState(), { type: "start" });
  const attempt = s.attempt;
  s = reduce(s, { type: "hangup" });
  assert.equal(s.phase, "idle");
  assert.equal(s.link, "not connected");
  assert.deepEqual(kinds(s.effects), ["teardown"]);
  assert.equal(reduce(s, { type: "connected", attempt, transport: "websocket", now: 1 }), s);
  assert.equal(reduce(s, { type: "failed", attempt, error: { kind: "network" } }), s);
  const failed = reduce(reduce(s, { type: "start" }), { type: "failed", attempt: attempt + 2, error: { kind: "busy" } });
  assert.equal(failed.phase, "error");
  assert.deepEqual(kinds(failed.effects), ["error", "teardown"]);
});

const spoken = (id, delta = "hi") => ({ type: "response.output_audio_transcript.delta", response_id: id, item_id: `item_${id}`, delta });
const timingsOfReply = (id, t) => ({ type: "response.omni.timings", response_id: id, timings: t });

test("WebRTC: speaking from the server's events: the first spoken text, then first audio + audio_ms", () => {
  const p = page("webrtc");
  p.server({ type: "input_audio_buffer.speech_stopped", item_id: "u1", audio_end_ms: 10 });
  p.server({ type: "response.created", response: { id: "r1" } });
  assert.equal(p.s.phase, "thinking");
  assert.ok(view(p.s).interruptible, "a reply being made can be interrupted");
  p.now += 420;
  const first = p.server(spoken("r1"));
  assert.deepEqual(kinds(first), ["text", "firstAudio"]);
  assert.equal(first[1].ms, 420);
  assert.equal(p.s.phase, "speaking");
  assert.equal(p.s.audible, "r1");
  assert.deepEqual(kinds(p.server(spoken("r1", " there"))), ["text"], "heard once");
  p.now += 100;                                                   // generated faster than real time
  const done = p.server({ type: "response.done", response: { id: "r1", status: "completed" } });
  assert.deepEqual(kinds(done), ["player:end", "turnStatus", "meta", "wake"]);
  assert.equal(done[3].inMs, TIMINGS_WAIT_MS, "without timings it ends a second after response.done");
  assert.equal(p.s.phase, "speaking");
  assert.ok(view(p.s).interruptible, "still heard: Interrupt stays enabled");
  p.now += 20;                                                    // heard at 420; 3 s of speech
  const t = p.server(timingsOfReply("r1", { first_audio_ms: 400, audio_ms: 3000 }));
  assert.deepEqual(t.at(-1), { do: "wake", inMs: 3000 + PLAYOUT_MARGIN_MS - 120 });
  p.now += 1500;
  assert.equal(reduce(p.s, { type: "tick", now: p.now }), p.s, "the fallback second is superseded by the timings");
  p.now = 420 + 3000 + PLAYOUT_MARGIN_MS;
  p.send({ type: "tick" });
  assert.equal(p.s.phase, "listening");
  assert.equal(p.s.audible, null);
  assert.ok(!view(p.s).interruptible);
  assert.deepEqual(Object.keys(p.s.responses), []);
});

test("WebRTC: late timings of a reply heard already over end it at once; no timings: one second", () => {
  const p = page("webrtc");
  p.send({ type: "text", text: "hi" });
  p.server({ type: "response.created", response: { id: "r1" } });
  p.server(spoken("r1"));
  p.server({ type: "response.done", response: { id: "r1", status: "completed" } });
  p.now += 500;
  p.server(timingsOfReply("r1", { audio_ms: 100 }));
  assert.equal(p.s.phase, "listening");
  p.send({ type: "text", text: "again" });
  p.server({ type: "response.created", response: { id: "r2" } });
  p.server(spoken("r2"));
  p.server({ type: "response.done", response: { id: "r2", status: "completed" } });
  p.now += TIMINGS_WAIT_MS - 1;
  p.send({ type: "tick" });
  assert.equal(p.s.phase, "speaking");
  p.now += 1;
  p.send({ type: "tick" });
  assert.equal(p.s.phase, "listening");
});

test("WebRTC: a text-only reply, never heard, is over at response.done", () => {
  const p = page("webrtc");
  p.send({ type: "text", text: "hi" });
  p.server({ type: "response.created", response: { id: "r1" } });
  p.server({ type: "response.output_text.delta", response_id: "r1", delta: "yo" });
  assert.equal(p.s.phase, "thinking");
  p.server({ type: "response.done", response: { id: "r1", status: "completed" } });
  assert.equal(p.s.phase, "listening");
});

test("WebRTC Interrupt of a reply that finished generating still cancels it (the server plays it)", () => {
  const p = page("webrtc");
  p.server({ type: "response.created", response: { id: "r1" } });
  p.server(spoken("r1"));
  p.server({ type: "response.done", response: { id: "r1", status: "completed" } });
  const fx = p.send({ type: "interrupt" });
  assert.deepEqual(kinds(fx), ["send:cancel", "meta", "player:drop"]);
  assert.equal(fx[0].id, "r1");
  assert.deepEqual(p.player({ ev: "dropped", id: "r1", samples: 0 }), [], "no truncate on WebRTC");
  assert.equal(p.s.phase, "listening");
  assert.equal(p.s.audibleUntil, null);
  p.now += 5000;
  assert.equal(reduce(p.s, { type: "tick", now: p.now }).phase, "listening");
});

test("backgrounded: paused, what was heard is cut and reported, the mic muted; resume unmutes", () => {
  const p = page();
  turnHeard(p, "r1");
  const fx = p.send({ type: "suspend", reason: "hidden" });
  assert.deepEqual(kinds(fx), ["send:cancel", "meta", "player:drop", "mute"]);
  assert.deepEqual(fx.at(-1), { do: "mute", on: true });
  assert.equal(view(p.s).badge, "paused");
  assert.equal(p.s.phase, "listening");
  assert.ok(!view(p.s).resumeTap);
  assert.equal(reduce(p.s, { type: "suspend", reason: "audio" }), p.s, "paused once");
  assert.deepEqual(p.player({ ev: "dropped", id: "r1", samples: 1200 }),
    [{ do: "truncate", id: "r1", itemId: "item_r1", audioEndMs: 50 }]);
  p.now += 60_000;                                               // timers stall in the background
  assert.equal(reduce(p.s, { type: "tick", now: p.now }), p.s, "no silence verdict while paused");
  const back = p.send({ type: "resume" });
  assert.deepEqual(back, [{ do: "mute", on: false }]);
  assert.equal(view(p.s).badge, "listening");
  assert.equal(p.s.lastHeard, p.now, "the watchdog starts afresh");
  p.now += SILENT_MS + 1;
  assert.equal(p.send({ type: "tick" })[0].do, "error", "then a silent server is lost again");
});

test("backgrounded and the audio cannot restart by itself: one tap is offered; mute is kept", () => {
  const p = page("webrtc");
  p.send({ type: "mute" });
  p.send({ type: "suspend", reason: "interrupted" });
  assert.deepEqual(p.send({ type: "mute" }), [{ do: "mute", on: true }], "unmuting while paused sends nothing");
  p.send({ type: "mute" });
  p.send({ type: "blocked" });
  assert.ok(view(p.s).resumeTap);
  assert.equal(view(p.s).badge, "paused");
  assert.deepEqual(p.send({ type: "resume" }), [{ do: "mute", on: true }], "the user's mute stays");
  assert.ok(!view(p.s).resumeTap);
  assert.equal(reduce(initialState(), { type: "suspend", reason: "hidden" }).phase, "idle", "no call: nothing");
});

test("backgrounded while connecting: the call comes up muted; hang-up clears the pause", () => {
  let s = reduce(initialState(), { type: "start" });
  s = reduce(s, { type: "suspend", reason: "pagehide" });
  assert.deepEqual(s.effects, [{ do: "mute", on: true }]);
  s = reduce(s, { type: "connected", attempt: s.attempt, transport: "websocket", at: "t", now: 0 });
  assert.deepEqual(s.effects, [{ do: "send", msg: "session" }, { do: "mute", on: true }]);
  assert.equal(view(s).badge, "paused");
  s = reduce(s, { type: "hangup" });
  assert.equal(s.paused, null);
  assert.equal(view(s).badge, "idle");
});

test("mute is kept across the connect and applied once the transport is up", () => {
  let s = reduce(initialState(), { type: "start" });
  s = reduce(s, { type: "mute" });
  assert.ok(s.muted && view(s).muted);
  s = reduce(s, { type: "connected", attempt: s.attempt, transport: "webrtc", at: "t", now: 0 });
  assert.deepEqual(s.effects.map((f) => f.do), ["send", "mute"]);
  assert.equal(s.link, "WebRTC");
});
