// The call: Start (unlocks audio in the tap), media, transport choice with fallback, event
// handling, barge-in and the numbers. `window.omni` exposes state for tests and debugging.
import * as P from "./protocol.js";
import * as ui from "./ui.js";
import { WsTransport, TransportError } from "./transport_ws.js";
import { WebRtcTransport } from "./transport_webrtc.js";
import { VoicePicker } from "./voice.js";
import { Prefs } from "./prefs.js";
import { CallRecorder, save } from "./export.js";
import { DevicePicker } from "./devices.js";

const KEY_STORE = "omni.apiKey", QUIET_RMS = 0.004, LOUD_RMS = 0.01;
// The server sends [ext] omni.heartbeat every 2 s: this long with no event at all is a dead server
// or network (a killed machine sends no close frame, and a browser cannot see WebSocket pings).
const SILENT_MS = 5000;
const TLS_HINT = "omni serve --tls-self-signed --host 0.0.0.0";
const app = window.omni = {
  ctx: null, player: null, analyser: null, transport: null, mic: null, cam: null, muted: false,
  responses: new Map(), dead: new Set(), current: null, audible: null, lastStop: null, turnStart: {},
  session: null, health: null, quietSince: 0, lastHeardMs: 0, sentKey: false, micAnalyser: null, typed: 0,
  metrics: { turns: [], outRmsMax: 0, transport: null, truncates: [], events: {} },
};
const radio = (name) => document.querySelector(`input[name="${name}"]:checked`).value;
const videoMode = () => radio("mode") === "video";

// ---- audio graph (created inside the Start tap: iPad/Safari only play audio unlocked there) --
function ensureCtx() {
  if (!app.ctx) {
    app.ctx = new (window.AudioContext || window.webkitAudioContext)();
    if (devices.speaker()) app.ctx.setSinkId?.(devices.speaker()).catch(() => {});
    app.analyser = app.ctx.createAnalyser();
    app.analyser.fftSize = 1024;
  }
  if (app.ctx.state !== "running") app.ctx.resume();
  return app.ctx;
}

async function ensurePlayer() {
  if (app.player) return;
  await app.ctx.audioWorklet.addModule("player-worklet.js");
  app.player = new AudioWorkletNode(app.ctx, "omni-player", { numberOfInputs: 0, outputChannelCount: [1] });
  app.player.port.onmessage = (m) => onPlayer(m.data);
  app.player.connect(app.analyser);
  app.player.connect(app.ctx.destination);
}

// ---- start / stop -------------------------------------------------------------------------
async function start() {
  ui.clearError();
  ensureCtx();                       // synchronously in the tap
  if (!navigator.mediaDevices?.getUserMedia) {
    ui.showError(["This page needs HTTPS for the microphone on a remote host. Start the server with ",
      [TLS_HINT], " and open https://<this-machine>:<port>/ (accept the certificate)."]);
    return;
  }
  ui.setCallButtons(true);
  ui.setState("connecting");
  try {
    await ensurePlayer();
    recorder.clear();                             // the download is of the latest call
    await recorder.attach(app.ctx, app.analyser);
    await openMedia();
    await connect();
  } catch (e) {
    hangUp(false);
    if (e instanceof TransportError) return transportFailed(e);
    ui.showError(e.message || String(e));
  }
}

async function openMedia() {
  try { app.mic = await navigator.mediaDevices.getUserMedia({ audio: devices.audio() }); }
  catch (e) {
    throw new Error(e.name === "NotAllowedError" ? "Microphone access was denied. Allow the microphone for this site (address bar → site settings) and press Start again."
      : e.name === "NotFoundError" ? "No microphone found." : "Microphone error: " + e.message);
  }
  app.cam = null;
  if (videoMode()) {
    try {
      app.cam = await navigator.mediaDevices.getUserMedia({ video: devices.video() });
    } catch (e) {
      ui.showError(e.name === "NotAllowedError" ? "Camera access was denied: continuing with voice only." : "Camera unavailable (" + e.message + "): voice only.");
    }
  }
  showCamera();
  devices.refresh();                               // labels are known now
}

function showCamera() {
  const v = ui.el("preview");
  v.srcObject = app.cam;
  v.classList.toggle("mirrored", devices.facing === "user");   // a selfie view, not the back camera
  ui.videoShown(!!app.cam);
  ui.el("flip").disabled = !app.cam;
  if (app.cam) v.play().catch(() => {});
}

/** Front <-> back camera during a call: a new camera track replaces the old one. */
async function flipCamera() {
  if (!app.cam) return;
  devices.flip();
  let cam;
  try { cam = await navigator.mediaDevices.getUserMedia({ video: devices.video() }); }
  catch (e) { devices.flip(); ui.showError("Could not switch the camera: " + e.message); return; }
  app.cam.getTracks().forEach((t) => t.stop());
  app.cam = cam;
  showCamera();
  app.transport?.setVideo(true, app.transport.kind === "webrtc" ? cam : ui.el("preview"));
}

async function connect() {
  const key = localStorage.getItem(KEY_STORE) || ui.el("api-key").value || "";
  app.sentKey = !!key;
  const handlers = { onEvent, onClose: onLost, onLevel: (l) => ui.setLevel("mic-level", l * 4) };
  const wantRtc = radio("transport") === "auto" && "RTCPeerConnection" in window;
  if (wantRtc) {
    const t = new WebRtcTransport({ ...handlers, audioEl: ui.el("remote-audio") });
    app.transport = t;
    try {
      await t.open({ key, micStream: app.mic, camStream: app.cam });
      const src = app.ctx.createMediaStreamSource(t.outputStream());
      src.connect(app.analyser);                 // meter + latency only; the <audio> element plays it
      app.micAnalyser = app.ctx.createAnalyser();   // the mic meter (WebSocket: the mic worklet's level)
      app.micAnalyser.fftSize = 1024;
      app.ctx.createMediaStreamSource(app.mic).connect(app.micAnalyser);
      return connected(t);
    } catch (e) {
      if (!(e instanceof TransportError) || e.kind === "auth" || e.kind === "busy") throw e;
      console.warn("WebRTC failed, falling back to WebSocket:", e.message);
      app.metrics.webrtcError = e.message;
    }
  }
  const t = new WsTransport(handlers);
  app.transport = t;
  await t.open({ key });
  await t.startMedia({ ctx: app.ctx, micStream: app.mic, videoEl: ui.el("preview"), video: !!app.cam });
  connected(t);
}

function connected(t) {
  app.metrics.transport = t.kind;
  ui.setConnection(t.kind === "webrtc" ? "WebRTC" + (app.metrics.webrtcError ? "" : "") : "WebSocket" + (app.metrics.webrtcError ? " (WebRTC failed)" : ""));
  send(sessionUpdate());
  if (app.muted) t.setMuted(true);
  app.lastHeardMs = performance.now();
  app.callStarted = new Date().toISOString();
  ui.setInCall(true);
  for (const id of ["dl-transcript", "dl-audio"]) ui.el(id).disabled = false;
  ui.setState("listening");
  if (t.kind === "webrtc") t.stats().then((s) => { app.metrics.pair = s.pair; });
}

function hangUp(showIdle = true) {
  app.transport?.close();
  app.transport = null;
  for (const s of [app.mic, app.cam]) s?.getTracks().forEach((t) => t.stop());
  app.mic = app.cam = null;
  for (const id of app.responses.keys()) dropAudio(id, false);
  app.current = app.audible = null;
  app.micAnalyser = null;
  app.lastHeardMs = 0;
  ui.el("flip").disabled = true;
  ui.setLevel("mic-level", 0);
  ui.setInCall(false);
  ui.el("preview").srcObject = null;
  ui.setCallButtons(false);
  ui.setState("idle");
  if (showIdle) ui.setConnection("not connected");
}

function transportFailed(e) {
  // A refused WebSocket handshake (401) reaches a browser only as close 1006: /healthz tells why.
  if (e.kind === "network" && app.health?.auth_required) e = new TransportError("auth", e.message);
  if (e.kind === "auth") {
    localStorage.removeItem(KEY_STORE);
    ui.askForKey();
    ui.showError(app.sentKey ? "The server refused this API key. Check it under Settings → API key and press Start."
      : "This server needs an API key. Enter it under Settings → API key and press Start.");
  } else if (e.kind === "busy") {
    ui.showError("The server is full (all sessions in use). Try again in a minute.", { reconnect: true });
  } else {
    console.warn("connect failed:", e.message);
    ui.showError(`Could not reach the server at ${location.host}: it may be stopped, or the network is down. ` +
      "Start it again (or check the network), then press Reconnect.", { reconnect: true });
  }
}

function onLost(info) {
  hangUp(false);
  ui.setConnection("disconnected");
  if (info?.error?.code === "server_busy") return transportFailed(new TransportError("busy", ""));
  const why = info?.error ? `: ${info.error.message}` : info?.silent
    ? `: nothing heard from the server for ${SILENT_MS / 1000} s (it may have stopped, or the network dropped)` : "";
  ui.showError(`Connection lost${why}. This conversation's context is gone; Reconnect starts a new one.`,
    { reconnect: true });
}

/** Every event the page itself sends goes here (the transports send mic audio and frames). */
function send(event) {
  if (!app.transport) return;
  ui.logEvent("out", event);
  app.transport.send(event);
}

// ---- server events ------------------------------------------------------------------------
function resp(id) {
  if (!app.responses.has(id)) app.responses.set(id, { id, itemId: null, tStop: null, received: 0, played: 0 });
  return app.responses.get(id);
}

function onEvent(e) {
  app.lastHeardMs = performance.now();
  ui.logEvent("in", e);
  app.metrics.events[e.type] = (app.metrics.events[e.type] || 0) + 1;
  const r = e.response_id ? resp(e.response_id) : null;
  if (r && app.dead.has(r.id) && e.type !== P.S.RESPONSE_DONE) return;   // stale: dropped on sight
  if (r && e.item_id) r.itemId = r.itemId || e.item_id;
  switch (e.type) {
    case P.S.SESSION_CREATED: case P.S.SESSION_UPDATED: app.session = e.session; break;
    case P.S.SPEECH_STARTED:
      app.turnStart[e.item_id] = e.audio_start_ms;
      ui.userTurn(e.item_id, null);
      if (app.audible || app.current) bargeIn(false);
      ui.setState("user_speaking");
      break;
    case P.S.SPEECH_STOPPED:
      ui.userTurn(e.item_id, e.audio_end_ms - (app.turnStart[e.item_id] ?? e.audio_end_ms));
      app.lastStop = performance.now();
      ui.setState("thinking");
      break;
    case P.S.RESPONSE_CREATED: {
      const n = resp(e.response.id);
      n.tStop = app.lastStop; app.lastStop = null;
      app.current = n.id;
      ui.el("interrupt").disabled = false;
      ui.assistantMeta(n.id, "…");
      break;
    }
    case "response.output_item.added": r.itemId = e.item?.id || r.itemId; break;
    case P.S.AUDIO_DELTA: {
      const pcm = P.pcm16ToFloat(e.delta);
      r.received += pcm.length;
      app.player.port.postMessage({ cmd: "push", id: r.id, samples: pcm }, [pcm.buffer]);
      break;
    }
    case P.S.TRANSCRIPT_DELTA: case P.S.TEXT_DELTA: ui.assistantText(r.id, e.delta); break;
    case P.S.RESPONSE_DONE: responseDone(e); break;
    case P.S.RESPONSE_TIMINGS: responseTimings(e); break;
    case P.S.USER_TRANSCRIPT_DELTA: ui.userText(e.item_id, e.delta, true); break;
    case P.S.USER_TRANSCRIPT_DONE: ui.userText(e.item_id, e.transcript, false); break;
    case P.S.USER_TRANSCRIPT_FAILED: ui.userText(e.item_id, "(no transcript)", false); break;
    case P.S.ERROR: serverError(P.errorOf(e)); break;
  }
}

function responseDone(e) {
  const r = resp(e.response.id), status = e.response.status;
  app.player.port.postMessage({ cmd: "end", id: r.id });
  if (app.current === r.id) { app.current = null; ui.el("interrupt").disabled = !app.audible; }
  const turn = app.metrics.turns.find((x) => x.id === r.id);
  if (turn) turn.status = status;
  else app.metrics.turns.push({ id: r.id, pageMs: null, status });
  const cut = status === "cancelled" || app.dead.has(r.id);
  const bits = [cut ? "interrupted" : status === "completed" ? "" : status, r.pageMs != null ? `first audio ${Math.round(r.pageMs)} ms after you stopped` : ""];
  ui.assistantMeta(r.id, bits.filter(Boolean).join(" · "), cut);
  if (!app.audible && app.transport?.kind === "websocket" && !r.received) ui.setState("listening");
}

// The server's figures of a reply; they follow its response.done.
function responseTimings(e) {
  const r = resp(e.response_id), t = P.timingsOf(e);
  r.server = t;
  if (t.first_audio_ms != null) ui.setStat("st-server", `${Math.round(t.first_audio_ms)} ms`);
  if (t.unit_prefill_mean_ms != null) {
    ui.setStat("st-unit", `${Math.round(t.unit_prefill_mean_ms)} ms mean, ${Math.round(t.unit_prefill_max_ms)} ms max (budget 1000 ms)`);
  }
  const turn = app.metrics.turns.find((x) => x.id === r.id);
  if (turn) turn.server = t;
  else app.metrics.turns.push({ id: r.id, pageMs: null, server: t });
}

function serverError(err) {
  if (err.code === "response_cancel_not_active") { console.info(err.message); return; }
  if (err.code === "invalid_api_key") return transportFailed(new TransportError("auth", err.message));
  if (err.code === "server_busy") return transportFailed(new TransportError("busy", err.message));
  ui.showError(`Server: ${err.message} (${err.code})`);
}

// ---- playback, barge-in, numbers -----------------------------------------------------------
function firstAudio(r) {
  if (r.pageMs != null || r.tStop == null) return;
  r.pageMs = performance.now() - r.tStop;
  ui.setStat("st-page", `${Math.round(r.pageMs)} ms`);
  ui.latencyBar(r.pageMs);
  const turn = app.metrics.turns.find((x) => x.id === r.id);
  if (turn) turn.pageMs = r.pageMs; else app.metrics.turns.push({ id: r.id, pageMs: r.pageMs });
}

function onPlayer(m) {
  const r = app.responses.get(m.id);
  if (!r) return;
  if (m.ev === "started") { app.audible = r.id; firstAudio(r); ui.setState("speaking"); ui.el("interrupt").disabled = false; }
  else if (m.ev === "played") r.played = m.samples;
  else if (m.ev === "ended") {
    if (app.audible === r.id) app.audible = null;
    if (!app.current && app.transport) { ui.setState("listening"); ui.el("interrupt").disabled = true; }
  } else if (m.ev === "dropped") {
    r.played = m.samples;
    if (r.truncate && r.itemId && app.transport) {
      const ms = (Math.min(m.samples, r.received) * 1000) / P.AUDIO_RATE;
      send(P.itemTruncate(r.itemId, ms));
      app.metrics.truncates.push({ id: r.id, item: r.itemId, audio_end_ms: Math.floor(ms), at: performance.now() });
    }
  }
}

function dropAudio(id, truncate) {
  const r = app.responses.get(id);
  if (!r || app.dead.has(id)) return;
  app.dead.add(id);
  r.truncate = truncate;
  r.droppedAt = performance.now();
  ui.assistantMeta(id, "interrupted", true);
  app.player?.port.postMessage({ cmd: "drop", id });
}

/** Stop what the user hears now (barge-in or Interrupt); `cancel` also sends response.cancel. */
function bargeIn(cancel) {
  const t = app.transport;
  const ws = t?.kind === "websocket";             // on WebRTC the server knows what was played
  // WebRTC: a reply that finished generating still plays from the server's queue, so cancel it too.
  const live = app.current || (!ws ? app.audible : null);
  if (cancel && live) send(P.responseCancel(live));
  for (const id of new Set([app.audible, app.current].filter(Boolean))) dropAudio(id, ws);
  app.audible = null;
  app.current = null;
  ui.el("interrupt").disabled = true;
  if (t) ui.setState("listening");                 // the audio stopped now, whatever the server says later
}

/** A typed message: shown at once, sent as a user item plus a reply; it cuts in like speech does. */
function sendText(text) {
  const t = app.transport;
  if (!t || !text.trim()) return false;
  if (app.audible || app.current) bargeIn(true);
  ui.userText(`typed_${++app.typed}`, text.trim(), false);
  send(P.textItem(text.trim()));
  send(P.responseCreate());
  app.lastStop = performance.now();              // latency counts from the send, as from end of speech
  ui.setState("thinking");
  return true;
}

setInterval(() => {                                // a server that went silent is gone
  if (app.transport && app.lastHeardMs && performance.now() - app.lastHeardMs > SILENT_MS) onLost({ silent: true });
}, 500);

function rmsOf(analyser) {
  const buf = new Float32Array(analyser.fftSize);
  analyser.getFloatTimeDomainData(buf);
  let s = 0;
  for (const x of buf) s += x * x;
  return Math.sqrt(s / buf.length);
}

setInterval(() => {                                // meters; first audio + end of speech on WebRTC
  if (!app.analyser) return;
  if (app.micAnalyser) ui.setLevel("mic-level", app.muted ? 0 : rmsOf(app.micAnalyser) * 4);
  const rms = rmsOf(app.analyser), now = performance.now();
  app.metrics.outRmsMax = Math.max(app.metrics.outRmsMax, rms);
  ui.setLevel("out-level", rms * 4);
  if (app.transport?.kind !== "webrtc") return;
  const r = app.current && app.responses.get(app.current);
  if (rms > LOUD_RMS) {
    app.quietSince = 0;
    if (r) { firstAudio(r); if (app.audible !== r.id) ui.setState("speaking"); app.audible = r.id; }
  } else if (rms < QUIET_RMS && app.audible && !app.current) {
    app.quietSince = app.quietSince || now;
    if (now - app.quietSince > 400) { app.audible = null; ui.setState("listening"); }
  }
}, 10);

// ---- wiring -------------------------------------------------------------------------------
const voice = new VoicePicker(ui.el("voice"), {
  getCtx: ensureCtx,
  onChange: () => send(sessionUpdate()),
  onError: (msg) => ui.showError(msg),
});
app.voice = voice;
const prefs = new Prefs(() => send(sessionUpdate()));
const recorder = new CallRecorder();
app.recorder = recorder;
const devices = new DevicePicker({ onSpeaker: setSpeaker });
app.devices = devices;
function setSpeaker(id) {
  ui.el("remote-audio").setSinkId?.(id).catch((e) => ui.showError("Could not use that speaker: " + e.message));
  app.ctx?.setSinkId?.(id).catch(() => {});
}
ui.el("flip").addEventListener("click", flipCamera);
ui.el("dl-transcript").addEventListener("click", () => {
  const doc = { started: app.callStarted, transport: app.metrics.transport, session_id: app.session?.id ?? null,
    turns: ui.transcriptEntries(), first_audio_ms: ui.latencies.map(Math.round) };
  save(new Blob([JSON.stringify(doc, null, 2)], { type: "application/json" }), "omni-conversation.json");
});
ui.el("dl-audio").addEventListener("click", async () => save(await recorder.wav(), "omni-replies.wav"));
app.prefs = prefs;
function sessionUpdate() { return P.sessionUpdate({ video: !!app.cam, voice: voice.current(), prefs: prefs.current() }); }
ui.el("start").addEventListener("click", start);
ui.el("hangup").addEventListener("click", () => hangUp(true));
ui.el("interrupt").addEventListener("click", () => bargeIn(true));
ui.el("reconnect").addEventListener("click", () => { hangUp(false); start(); });
ui.el("error-close").addEventListener("click", ui.clearError);
ui.el("mute").addEventListener("click", () => {
  app.muted = !app.muted;
  app.transport?.setMuted(app.muted);
  ui.setMuted(app.muted);
});
ui.el("api-key").addEventListener("change", (e) => localStorage.setItem(KEY_STORE, e.target.value.trim()));
ui.el("text-form").addEventListener("submit", (e) => {
  e.preventDefault();
  if (sendText(ui.el("text-input").value)) ui.el("text-input").value = "";
});
// Keys: Space interrupts, M mutes, Escape dismisses an error; not while typing in a field.
document.addEventListener("keydown", (e) => {
  if (e.target.closest?.("input, textarea, select, [contenteditable]") || e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === " " && !ui.el("interrupt").disabled) { e.preventDefault(); bargeIn(true); }
  else if ((e.key === "m" || e.key === "M") && !ui.el("mute").disabled) ui.el("mute").click();
  else if (e.key === "Escape") ui.clearError();
});

(async function init() {
  const local = ["localhost", "127.0.0.1", "[::1]"].includes(location.hostname);
  if (!window.isSecureContext && !local) {
    ui.showError(["Microphone and camera need HTTPS when the page is not on this computer. Start the server with ",
      [TLS_HINT], " and open the https:// address (accept the self-signed certificate)."]);
  }
  try {
    app.health = await (await fetch("/healthz")).json();
    if (app.health.embedded_demo_model) ui.demoBanner(app.health.load_model_hint);
    if (app.health.auth_required) ui.askForKey(localStorage.getItem(KEY_STORE) || "");
    if (app.health.max_sessions && app.health.sessions >= app.health.max_sessions) {
      ui.showError("The server is full right now (all sessions in use).");
    }
  } catch { ui.showError("Cannot reach the server's /healthz.", { reconnect: false }); }
})();
