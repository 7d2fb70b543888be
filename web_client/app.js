// The page's I/O around the call state machine (state.js): the audio graph (created inside the
// Start tap), media and transport opening with fallback, and the DOM. Every server event, player
// message and user action is one reducer event; `render` then shows the state, and the
// transition's effects are run here. `window.omni` is a read-only view for tests and debugging.
import * as P from "./protocol.js";
import * as ui from "./ui.js";
import * as errors from "./errors.js";
import { reduce, initialState, view, replyOf } from "./state.js";
import { WsTransport, TransportError } from "./transport_ws.js";
import { WebRtcTransport } from "./transport_webrtc.js";
import { VoicePicker } from "./voice.js";
import { Prefs } from "./prefs.js";
import { CallRecorder, save } from "./export.js";
import { DevicePicker } from "./devices.js";
import { Background } from "./background.js";
import { Family } from "./family.js";
import { Reader } from "./speak.js";
import { startMeters } from "./meters.js";

const { KEY_STORE, TLS_HINT } = errors;
const TURNS_KEPT = 200;   // metrics.turns / truncates: enough for any test, bounded for a long call
// Browser handles (audio graph, media, transport): resources, not call state, which is `state`.
const io = { ctx: null, player: null, analyser: null, micAnalyser: null, transport: null, mic: null, cam: null };
const metrics = { turns: [], outRmsMax: 0, transport: null, truncates: [], events: {} };
let state = initialState(), health = null, family = new Family(null);   // the family: from /healthz
const radio = (name) => document.querySelector(`input[name="${name}"]:checked`).value;
const videoMode = () => radio("mode") === "video";
const apiKey = () => localStorage.getItem(KEY_STORE) || ui.el("api-key").value || "";

// ---- the one loop: event -> state -> render -> effects --------------------------------------
const queue = [];
let dispatching = false;
function dispatch(ev) {
  queue.push(ev);
  if (dispatching) return;               // an effect dispatched: handled after the current one
  dispatching = true;
  try {
    while (queue.length) {
      const before = state;
      state = reduce(state, queue.shift());
      if (state === before) continue;
      render(state, before);
      for (const fx of state.effects) run(fx);
    }
  } finally { dispatching = false; }
}

/** The DOM that follows the state: badge, buttons, connection line. */
function render(s, before) {
  const v = view(s), was = before ? view(before) : {};
  if (v.badge !== was.badge) ui.setState(v.badge);
  if (v.calling !== was.calling) ui.setCallButtons(v.calling);
  if (v.connected !== was.connected) ui.setInCall(v.connected);
  if (v.link !== was.link && v.link != null) ui.setConnection(v.link);
  if (v.muted !== was.muted) ui.setMuted(v.muted);
  if (v.downloads !== was.downloads) for (const id of ["dl-transcript", "dl-audio"]) ui.el(id).disabled = !v.downloads;
  if (v.resumeTap !== was.resumeTap) { ui.el("resume").hidden = !v.resumeTap; ui.el("start").hidden = v.resumeTap; }
  ui.el("interrupt").disabled = !v.interruptible;   // after setCallButtons, which also sets it
}

const OUT = {                                        // effect `send` -> the wire event
  session: () => sessionUpdate(), cancel: (f) => P.responseCancel(f.id), text: (f) => P.textItem(f.text),
  create: () => P.responseCreate(),
};

function run(fx) {
  switch (fx.do) {
    case "open": openCall(fx.attempt); break;
    case "teardown": release(); reader.stop(); break;
    case "clearError": ui.clearError(); break;
    case "send": send(OUT[fx.msg](fx)); break;
    case "truncate":
      send(P.itemTruncate(fx.itemId, fx.audioEndMs));
      keep(metrics.truncates, { id: fx.id, item: fx.itemId, audio_end_ms: Math.floor(fx.audioEndMs), at: performance.now() });
      break;
    case "player":
      if (fx.cmd === "push") io.player?.port.postMessage({ cmd: "push", id: fx.id, samples: fx.samples }, [fx.samples.buffer]);
      else io.player?.port.postMessage({ cmd: fx.cmd, id: fx.id });
      break;
    case "mute": io.transport?.setMuted(fx.on); break;
    case "wake": setTimeout(() => dispatch({ type: "tick", now: performance.now() }), fx.inMs + 1); break;
    case "meta": ui.assistantMeta(fx.id, fx.text, fx.cut); if (fx.cut) reader.done(fx.id, true); break;
    case "text": ui.assistantText(fx.id, fx.delta); reader.text(fx.id, fx.delta); break;
    case "reasoning": ui.assistantReasoning(fx.id, fx.delta); break;
    case "userTurn": ui.userTurn(fx.itemId, fx.durationMs); break;
    case "userText": ui.userText(fx.itemId, fx.text, fx.append); break;
    case "firstAudio":
      ui.setStat("st-page", `${Math.round(fx.ms)} ms`);
      ui.latencyBar(fx.ms);
      turnOf(fx.id).pageMs = fx.ms;
      break;
    case "turnStatus": turnOf(fx.id).status = fx.status; reader.done(fx.id, fx.status === "cancelled"); break;
    case "videoStats": metrics.videoStats = fx.stats; ui.setStat("st-frames", Family.statsText(fx.stats)); break;
    case "timings": timings(fx.id, fx.timings); break;
    case "error":
      if (fx.lost) errors.callLost(fx.lost, health);
      else errors.explainFailure(fx.failure, health);
      break;
    case "serverError": errors.serverError(fx.error, health, !!apiKey()); break;
    default: throw new Error(`unknown effect ${fx.do}`);
  }
}

/** Every event the page itself sends goes here (the transports send mic audio and frames). */
function send(event) {
  if (!io.transport) return;
  ui.logEvent("out", event);
  io.transport.send(event);
}

function keep(list, item) { list.push(item); if (list.length > TURNS_KEPT) list.shift(); }

function turnOf(id) {
  let t = metrics.turns.find((x) => x.id === id);
  if (!t) keep(metrics.turns, t = { id, pageMs: null });
  return t;
}

// The server's figures of a reply; they follow its response.done.
function timings(id, t) {
  if (t.first_audio_ms != null) ui.setStat("st-server", `${Math.round(t.first_audio_ms)} ms`);
  if (t.unit_prefill_mean_ms != null) {
    ui.setStat("st-unit", `${Math.round(t.unit_prefill_mean_ms)} ms mean, ${Math.round(t.unit_prefill_max_ms)} ms max (budget 1000 ms)`);
  }
  turnOf(id).server = t;
}

// ---- audio graph (created inside the Start tap: iPad/Safari only play audio unlocked there) --
function ensureCtx() {
  if (!io.ctx) {
    io.ctx = new (window.AudioContext || window.webkitAudioContext)();
    io.analyser = io.ctx.createAnalyser();
    io.analyser.fftSize = 1024;
    background.watchContext(io.ctx);
    devices.applySpeaker(io.ctx, ui.el("remote-audio")).catch((e) => ui.showError("Could not use that speaker: " + e.message));
  }
  if (io.ctx.state !== "running") io.ctx.resume();
  return io.ctx;
}

async function ensurePlayer() {
  if (io.player) return;
  await io.ctx.audioWorklet.addModule("player-worklet.js");
  io.player = new AudioWorkletNode(io.ctx, "omni-player", { numberOfInputs: 0, outputChannelCount: [1] });
  io.player.port.onmessage = (m) => dispatch({ type: "player", msg: m.data, now: performance.now() });
  io.player.connect(io.analyser);
  io.player.connect(io.ctx.destination);
}

// ---- opening and closing a call --------------------------------------------------------------
const STALE = Symbol("stale");

/** The `open` effect: media, then a transport; the outcome is a `connected` or `failed` event. */
async function openCall(attempt) {
  if (!navigator.mediaDevices?.getUserMedia) return dispatch({ type: "failed", attempt, error: { kind: "insecure" } });
  ensureCtx();                                   // synchronously in the tap
  const own = {};                                // what this attempt opened: released here if the call ended meanwhile
  const hold = (k, v) => { own[k] = v; if (state.attempt !== attempt) throw STALE; io[k] = v; return v; };
  const key = apiKey();
  try {
    await healthRead;                             // the family decides what the call opens
    await ensurePlayer();
    recorder.clear();                             // the download is of the latest call
    await recorder.attach(io.ctx, io.analyser);
    await openMedia(hold);
    const rtcError = await connect(attempt, key, hold);
    metrics.transport = io.transport.kind;
    dispatch({ type: "connected", attempt, transport: io.transport.kind, rtcFailed: !!rtcError, audio: family.audio,
      at: new Date().toISOString(), now: performance.now() });
    if (io.transport?.kind === "webrtc") readPair(io.transport, 20);
  } catch (e) {
    if (e === STALE || state.attempt !== attempt) return releaseOwn(own);
    const kind = e instanceof TransportError ? e.kind : "media";
    dispatch({ type: "failed", attempt, error: { kind, message: e.message || String(e), keyed: !!key } });
  }
}

// The nominated candidate pair can show up in getStats a little after the data channel opens.
function readPair(t, triesLeft) {
  t.stats().then((s) => {
    if (s.pair) metrics.pair = s.pair;
    else if (triesLeft > 0 && io.transport === t) setTimeout(() => readPair(t, triesLeft - 1), 250);
  });
}

async function openMedia(hold) {
  try { hold("mic", family.audio ? await devices.open("audioinput") : null); }   // V-4.5 hears no audio
  catch (e) {
    if (e === STALE) throw e;
    throw new Error(e.name === "NotAllowedError" ? "Microphone access was denied. Allow the microphone for this site (address bar → site settings) and press Start again."
      : e.name === "NotFoundError" ? "No microphone found." : "Microphone error: " + e.message);
  }
  hold("cam", null);
  if (videoMode() || !family.audio) {              // camera + text: the camera is its whole input
    const alone = family.audio ? "voice only" : "text only";
    let cam = null;
    try { cam = await devices.open("videoinput"); }
    catch (e) {
      ui.showError(e.name === "NotAllowedError" ? `Camera access was denied: continuing with ${alone}.` : `Camera unavailable (${e.message}): ${alone}.`);
    }
    if (cam) hold("cam", cam);
  }
  background.watchStream(io.mic);
  showCamera();
  devices.refresh();                               // labels are known now
}

/** The transport, WebRTC first when chosen; resolves to the WebRTC error when it fell back. */
async function connect(attempt, key, hold) {
  let rtcError = null;
  const handlers = {
    onEvent: (e) => onEvent(e, attempt),
    onClose: (info) => dispatch({ type: "lost", attempt, info }),
    onLevel: (l) => ui.setLevel("mic-level", l * 4),
  };
  if (radio("transport") === "auto" && "RTCPeerConnection" in window) {
    const t = hold("transport", new WebRtcTransport({ ...handlers, audioEl: ui.el("remote-audio") }));
    try {
      await t.open({ key, micStream: io.mic, camStream: io.cam });
      hold("transport", t);                        // still this attempt's
      if (!io.mic) return null;                    // no audio either way (MiniCPM-V 4.5)
      io.ctx.createMediaStreamSource(t.outputStream()).connect(io.analyser);   // meter + latency; <audio> plays it
      io.micAnalyser = io.ctx.createAnalyser();     // the mic meter (WebSocket: the mic worklet's level)
      io.micAnalyser.fftSize = 1024;
      io.ctx.createMediaStreamSource(io.mic).connect(io.micAnalyser);
      return null;
    } catch (e) {
      if (e === STALE || !(e instanceof TransportError) || e.kind === "auth" || e.kind === "busy") throw e;
      console.warn("WebRTC failed, falling back to WebSocket:", e.message);
      metrics.webrtcError = rtcError = e.message;
    }
  }
  const t = hold("transport", new WsTransport(handlers));
  await t.open({ key });
  hold("transport", t);
  await t.startMedia({ ctx: io.ctx, micStream: io.mic, videoEl: ui.el("preview"), video: !!io.cam,
    fps: family.framesPerS(prefs.current()), stamped: family.stampsFrames });
  hold("transport", t);
  return rtcError;
}

function onEvent(e, attempt) {
  ui.logEvent("in", e);
  metrics.events[e.type] = (metrics.events[e.type] || 0) + 1;
  const samples = e.type === P.S.AUDIO_DELTA ? P.pcm16ToFloat(e.delta) : undefined;
  dispatch({ type: "server", attempt, event: e, samples, now: performance.now() });
}

function releaseOwn(own) {
  own.transport?.close();
  for (const s of [own.mic, own.cam]) s?.getTracks().forEach((t) => t.stop());
}

/** The `teardown` effect: the call's media and transport go. */
function release() {
  releaseOwn(io);
  io.transport = io.mic = io.cam = io.micAnalyser = null;
  ui.el("flip").disabled = true;
  ui.setLevel("mic-level", 0);
  ui.el("preview").srcObject = null;
  ui.videoShown(false);                            // "camera off", not a black box
}

/** After the background ended the microphone track (iPadOS may): a new one, sent in its place. */
async function reacquireMic() {
  const old = io.mic;
  if (!old) return;
  const mic = await devices.open("audioinput");
  if (io.mic !== old) { mic.getTracks().forEach((t) => t.stop()); return; }   // the call changed meanwhile
  old.getTracks().forEach((t) => t.stop());
  io.mic = mic;
  background.watchStream(mic);
  io.transport?.replaceMic(mic, io.ctx);
  if (io.micAnalyser) io.ctx.createMediaStreamSource(mic).connect(io.micAnalyser);
}

function showCamera() {
  const v = ui.el("preview");
  v.srcObject = io.cam;
  v.classList.toggle("mirrored", devices.facing === "user");   // a selfie view, not the back camera
  ui.videoShown(!!io.cam);
  ui.el("flip").disabled = !io.cam;
  if (io.cam) v.play().catch(() => {});
}

/** Front <-> back camera during a call: a new camera track replaces the old one. */
async function flipCamera() {
  if (!io.cam) return;
  devices.flip();
  let cam;
  try { cam = await navigator.mediaDevices.getUserMedia({ video: devices.video() }); }
  catch (e) { devices.flip(); ui.showError("Could not switch the camera: " + e.message); return; }
  io.cam.getTracks().forEach((t) => t.stop());
  io.cam = cam;
  showCamera();
  io.transport?.setVideo(true, io.transport.kind === "webrtc" ? cam : ui.el("preview"));
}

// ---- clocks: the silence watchdog and the meters ----------------------------------------------
setInterval(() => dispatch({ type: "tick", now: performance.now() }), 500);
startMeters({ io, muted: () => state.muted, metrics });

// ---- wiring -------------------------------------------------------------------------------
const voice = new VoicePicker(ui.el("voice"), {
  getCtx: ensureCtx,
  onChange: () => dispatch({ type: "settings" }),
  onError: (msg) => ui.showError(msg),
});
const prefs = new Prefs((p) => { io.transport?.setFrameRate(family.framesPerS(p)); dispatch({ type: "settings" }); });
const reader = new Reader({ enabled: () => !family.audio && !!prefs.current().readAloud });
const recorder = new CallRecorder();
const devices = new DevicePicker({
  onSpeaker: setSpeaker,
  onGone: (_kind, name) => ui.notice(`Your saved ${name} is not available: using the system default. Pick another under Settings → Devices.`),
});
const background = new Background({
  dispatch,
  media: { ctx: () => io.ctx, mic: () => io.mic, audioEl: ui.el("remote-audio"), reacquire: reacquireMic },
});
function setSpeaker(id) {
  ui.el("remote-audio").setSinkId?.(id).catch((e) => ui.showError("Could not use that speaker: " + e.message));
  io.ctx?.setSinkId?.(id).catch(() => {});
}
function sessionUpdate() { return family.session({ video: !!io.cam, voice: voice.current(), prefs: prefs.current() }); }

window.omni = Object.freeze({
  get state() { return state; },
  /** Each reply's bookkeeping by id, live or recently finished (a copy). */
  get responses() { return new Map([...state.retired, ...Object.values(state.responses)].map((r) => [r.id, r])); },
  reply: (id) => replyOf(state, id),
  metrics, devices, voice, prefs, recorder,
  get mic() { return io.mic; }, get cam() { return io.cam; }, get transport() { return io.transport; }, get ctx() { return io.ctx; },
  get health() { return health; }, get family() { return family.key; }, get callStarted() { return state.callStarted; }, get session() { return state.session; },
});

ui.el("flip").addEventListener("click", flipCamera);
ui.el("dl-transcript").addEventListener("click", () => {
  const doc = { started: state.callStarted, transport: metrics.transport, session_id: state.session?.id ?? null,
    turns: ui.transcriptEntries(), first_audio_ms: ui.latencies.map(Math.round) };
  save(new Blob([JSON.stringify(doc, null, 2)], { type: "application/json" }), "omni-conversation.json");
});
ui.el("dl-audio").addEventListener("click", async () => save(await recorder.wav(), "omni-replies.wav"));
ui.el("start").addEventListener("click", () => dispatch({ type: "start" }));
ui.el("hangup").addEventListener("click", () => dispatch({ type: "hangup" }));
ui.el("interrupt").addEventListener("click", () => dispatch({ type: "interrupt" }));
ui.el("reconnect").addEventListener("click", () => dispatch({ type: "reconnect" }));
ui.el("error-close").addEventListener("click", () => dispatch({ type: "dismiss" }));
ui.el("mute").addEventListener("click", () => dispatch({ type: "mute" }));
ui.el("resume").addEventListener("click", () => background.tap());
ui.el("notice-close").addEventListener("click", () => ui.clearNotice());
// While paused for want of a tap, any tap on the page restarts the audio (a user gesture).
document.addEventListener("pointerdown", (e) => { if (view(state).resumeTap && e.target.id !== "resume") background.tap(); }, true);
ui.el("api-key").addEventListener("change", (e) => localStorage.setItem(KEY_STORE, e.target.value.trim()));
ui.el("text-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const typed = state.typed;
  dispatch({ type: "text", text: ui.el("text-input").value, now: performance.now() });
  if (state.typed !== typed) { ui.el("text-input").value = ""; reader.stop(); }   // sent: a new question
});
// Keys: Space interrupts, M mutes, Escape dismisses an error; not while typing in a field.
document.addEventListener("keydown", (e) => {
  if (e.target.closest?.("input, textarea, select, [contenteditable]") || e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === " " && view(state).interruptible) { e.preventDefault(); dispatch({ type: "interrupt" }); }
  else if ((e.key === "m" || e.key === "M") && view(state).calling && family.audio) dispatch({ type: "mute" });
  else if (e.key === "Escape") dispatch({ type: "dismiss" });
});
render(state, null);

const healthRead = (async function init() {
  const local = ["localhost", "127.0.0.1", "[::1]"].includes(location.hostname);
  if (!window.isSecureContext && !local) {
    ui.showError(["Microphone and camera need HTTPS when the page is not on this computer. Start the server with ",
      [TLS_HINT], " and open the https:// address (accept the self-signed certificate)."]);
  }
  try {
    health = await (await fetch("/healthz")).json();
    family = new Family(health.family);
    family.apply();
    if (health.embedded_demo_model) ui.demoBanner(family.hint ?? health.load_model_hint, family.title);
    if (health.auth_required) ui.askForKey(localStorage.getItem(KEY_STORE) || "");
    if (health.max_sessions && health.sessions >= health.max_sessions) {
      ui.showError("The server is full right now (all sessions in use).");
    }
  } catch { ui.showError("Cannot reach the server's /healthz.", { reconnect: false }); }
})();
