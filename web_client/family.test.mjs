// The page with a MiniCPM-V 4.5 model: the family switch (family.js), the events it sends
// (protocol.js), a call without audio in the state machine (state.js) and reading replies aloud
// (speak.js). Run: node --test web_client/ (tests/test_web_state.py runs it in the suite).
import { test } from "node:test";
import assert from "node:assert/strict";
import { reduce, initialState, replyOf } from "./state.js";
import { Family, fpsOf, FPS_DEFAULT } from "./family.js";
import * as P from "./protocol.js";
import { Reader } from "./speak.js";

const strip = (ev) => { const { event_id: _, ...rest } = ev; return rest; };

test("the family: V-4.5 is camera + text, o-2.6 and anything unknown the voice page", () => {
  const v = new Family("v-4.5"), o = new Family("o-2.6");
  assert.equal(v.audio, false);
  assert.equal(v.stampsFrames, true);
  assert.equal(o.audio, true);
  assert.equal(o.stampsFrames, false);
  for (const key of [null, undefined, "x-9", "toString", "__proto__"]) assert.equal(new Family(key).key, "o-2.6", String(key));
});

test("V-4.5's session.update: text out, the frame rate, no audio section at all", () => {
  const prefs = { instructions: "be brief", temperature: 0.3, seed: 7, videoFps: 5, vadThreshold: 0.2, textOnly: false };
  const ev = new Family("v-4.5").session({ video: true, voice: { kind: "default" }, prefs });
  assert.equal(ev.type, "session.update");
  assert.deepEqual(ev.session, { type: "realtime", omni: { video: true, events: true, seed: 7, video_fps: 5, thinking: false },
    instructions: "be brief", output_modalities: ["text"], temperature: 0.3 });
  const thinking = new Family("v-4.5").session({ video: false, voice: null, prefs: { thinking: true } }).session;
  assert.deepEqual(thinking.omni, { video: false, events: true, seed: null, video_fps: FPS_DEFAULT, thinking: true });
  assert.equal(thinking.temperature, undefined);                       // blank: the model card's preset
});

test("o-2.6's session.update is the voice page's, with no V-4.5 fields", () => {
  const prefs = { instructions: "", temperature: null, seed: null, videoFps: 6, readAloud: true, thinking: true, vadThreshold: 0.4 };
  const voice = { kind: "default" };
  const ev = new Family("o-2.6").session({ video: false, voice, prefs });
  assert.deepEqual(strip(ev), strip(P.sessionUpdate({ video: false, voice, prefs })));
  assert.deepEqual(Object.keys(ev.session.omni).sort(), ["events", "seed", "video"]);
  assert.equal(ev.session.audio.input.turn_detection.threshold, 0.4);
  assert.deepEqual(ev.session.output_modalities, ["audio"]);
});

test("the frame rate: 1-6 fps as chosen, the default when blank; o-2.6 paces one frame a second", () => {
  assert.equal(fpsOf({ videoFps: null }), FPS_DEFAULT);
  assert.equal(fpsOf({}), FPS_DEFAULT);
  assert.equal(fpsOf({ videoFps: 0 }), FPS_DEFAULT);
  assert.equal(fpsOf({ videoFps: 1 }), 1);
  assert.equal(fpsOf({ videoFps: 6 }), 6);
  assert.equal(fpsOf({ videoFps: 60 }), 6);
  assert.equal(new Family("v-4.5").framesPerS({ videoFps: 4 }), 4);
  assert.equal(new Family("o-2.6").framesPerS({ videoFps: 4 }), 1);
});

test("a frame carries captured_ms only when given, as a whole number of ms", () => {
  assert.deepEqual(strip(P.imageAppend("data:image/jpeg;base64,AA==")),
    { type: "input_image_buffer.append", image: "data:image/jpeg;base64,AA==" });
  assert.deepEqual(strip(P.imageAppend("data:x", 1234.56)),
    { type: "input_image_buffer.append", image: "data:x", captured_ms: 1235 });
});

test("omni.video.stats: the figures, and the line the page shows", () => {
  const st = P.videoStatsOf({ type: "omni.video.stats", fps: 2.96, frames_total: 31, packs_total: 10 });
  assert.deepEqual(st, { fps: 2.96, frames_total: 31, packs_total: 10 });
  assert.equal(Family.statsText(st), "3 fps reach the model (31 frames in 10 packs)");
  assert.equal(Family.statsText({ fps: 1, frames_total: 1, packs_total: 1 }), "1 fps reach the model (1 frame in 1 pack)");
  assert.deepEqual(P.videoStatsOf({ type: "omni.video.stats", fps: "x" }), { fps: 0, frames_total: 0, packs_total: 0 });
});

/** A call on the WebSocket with (audio true) or without (false) audio. */
function call(audio) {
  const p = { s: initialState(), now: 0 };
  p.send = (ev) => { p.s = reduce(p.s, { now: p.now, ...ev }); return p.s.effects; };
  p.server = (event) => p.send({ type: "server", attempt: p.s.attempt, event });
  p.send({ type: "start" });
  p.send({ type: "connected", attempt: p.s.attempt, transport: "websocket", rtcFailed: false, audio, at: "t0" });
  return p;
}
const kinds = (fx) => fx.map((f) => (f.do === "player" ? `player:${f.cmd}` : f.do === "send" ? `send:${f.msg}` : f.do));

test("a call without audio: a typed turn streams text, a new question cuts it with no truncate", () => {
  const p = call(false);
  assert.equal(p.s.audio, false);
  assert.equal(p.s.phase, "listening");
  p.send({ type: "text", text: "what do you see?" });
  assert.equal(p.s.phase, "thinking");
  p.server({ type: "response.created", response: { id: "r1" } });
  p.server({ type: "response.output_item.added", response_id: "r1", item: { id: "item_r1" } });
  const d = p.server({ type: "response.output_text.delta", response_id: "r1", item_id: "item_r1", delta: "A cup" });
  assert.deepEqual(d, [{ do: "text", id: "r1", delta: "A cup" }]);
  const cut = p.send({ type: "text", text: "and now?" });
  assert.deepEqual(kinds(cut), ["send:cancel", "meta", "player:drop", "userText", "send:text", "send:create"]);
  assert.equal(replyOf(p.s, "r1").truncate, false);
  // the player acks the drop of a reply it never had: nothing is sent (the server refuses truncate)
  assert.deepEqual(p.send({ type: "player", msg: { ev: "dropped", id: "r1", samples: 0 } }), []);
  p.server({ type: "response.done", response: { id: "r1", status: "cancelled" } });
  p.server({ type: "response.created", response: { id: "r2" } });
  p.server({ type: "response.output_text.delta", response_id: "r2", delta: "Still a cup." });
  p.server({ type: "response.done", response: { id: "r2", status: "completed" } });
  assert.equal(p.s.phase, "listening");
  assert.deepEqual(Object.keys(p.s.responses), []);
});

test("a call with audio (the default) still truncates what was heard", () => {
  const p = call(undefined);
  assert.equal(p.s.audio, true);
  p.send({ type: "text", text: "hi" });
  p.server({ type: "response.created", response: { id: "r1" } });
  p.server({ type: "response.output_audio.delta", response_id: "r1", item_id: "item_r1", delta: "" });
  p.send({ type: "interrupt" });
  assert.equal(replyOf(p.s, "r1").truncate, true);
});

test("a thinking reply: its reasoning is a reasoning effect, apart from the text", () => {
  const p = call(false);
  p.send({ type: "text", text: "why?" });
  p.server({ type: "response.created", response: { id: "r1" } });
  assert.deepEqual(p.server({ type: "response.reasoning_text.delta", response_id: "r1", item_id: "i1", delta: "Hmm" }),
    [{ do: "reasoning", id: "r1", delta: "Hmm" }]);
  assert.deepEqual(p.server({ type: "response.output_text.delta", response_id: "r1", item_id: "i1", delta: "So." }),
    [{ do: "text", id: "r1", delta: "So." }]);
  p.send({ type: "interrupt" });
  assert.deepEqual(p.server({ type: "response.reasoning_text.delta", response_id: "r1", delta: "late" }), []);  // cut: dropped
});

test("omni.video.stats becomes a videoStats effect; the phase is untouched", () => {
  const p = call(false);
  const fx = p.server({ type: "omni.video.stats", fps: 4, frames_total: 12, packs_total: 4 });
  assert.deepEqual(fx, [{ do: "videoStats", stats: { fps: 4, frames_total: 12, packs_total: 4 } }]);
  assert.equal(p.s.phase, "listening");
});

/** A speechSynthesis stand-in that records what it was asked to say. */
function synth() {
  const said = [];
  return { said, cancels: 0, speaking: false, pending: false,
    speak(u) { said.push(u.text); }, cancel() { this.cancels++; } };
}
class Utterance { constructor(text) { this.text = text; } }

test("read aloud: sentences spoken as they complete, the rest at the end; off: nothing", () => {
  let on = true;
  const s = synth(), r = new Reader({ enabled: () => on, synth: s, Utterance });
  r.text("r1", "A red ");
  assert.deepEqual(s.said, []);
  r.text("r1", "cup. It is ");
  assert.deepEqual(s.said, ["A red cup."]);
  r.text("r1", "full");
  r.done("r1", false);
  assert.deepEqual(s.said, ["A red cup.", "It is full"]);
  on = false;
  r.text("r2", "Nothing. Here.");
  r.done("r2", false);
  assert.equal(s.said.length, 2);
});

test("read aloud: a cut reply stops the voice; its later response.done does not cut the next one", () => {
  const s = synth(), r = new Reader({ enabled: () => true, synth: s, Utterance });
  r.text("r1", "One. Two");
  r.done("r1", true);                          // barge-in
  assert.equal(s.cancels, 1);
  r.text("r2", "Three. ");
  r.done("r1", true);                          // r1's response.done (cancelled) comes later
  assert.equal(s.cancels, 1);
  assert.deepEqual(s.said, ["One.", "Three."]);
  const none = new Reader({ enabled: () => true, synth: undefined, Utterance: undefined });
  none.text("r1", "No voices. Here."); none.done("r1", false); none.stop();   // no speech synthesis: nothing breaks
});
