// The call as one pure state machine: `reduce(state, event)` returns the next state, with what the
// transition asks the page to do in `state.effects` (sends, player commands, transcript and number
// updates), run once by app.js. No DOM, no clock, no I/O: every event carries its own `now`.
// Owns the phase, the reply being made (`current`) and heard (`audible`) and each reply's
// bookkeeping; not the media handles, the transcript's DOM or the test metrics.
//
// Phases: idle → connecting → listening → user_speaking → thinking → speaking → listening …;
// "error" when a call ended by a failure (until dismissed or restarted). A reply cut by barge-in
// or Interrupt is `dead`: the phase goes straight back to listening and its late events are
// dropped on sight (docs/STYLE.md 9).
//
// "Speaking" comes from events, never from measuring the reply's level (Safari may read a WebRTC
// track as silence): on the WebSocket the player's reports of the audio it plays; on WebRTC, whose
// audio plays in an <audio> element, the reply's first spoken text, and its end is the first audio
// plus the reply's `audio_ms` from response.omni.timings (a stall at the server, which delays its
// track, ends the badge that much early; the audio itself is never cut by this).
//
// A call in the background (page hidden, AudioContext interrupted, capture muted by the system) is
// `paused`: the badge says so, what was being heard is cut (the user did not hear it), the mic
// sends silence, and the silence watchdog waits; `resume` undoes it, `blocked` asks for a tap.
//
// A call without audio (`connected` with `audio: false`: MiniCPM-V 4.5 sees and reads, it neither
// hears nor speaks) has typed turns and text replies only: nothing to truncate on a barge-in.
//
// Events: {type:"start"|"reconnect"|"hangup"|"dismiss"|"mute"|"settings"}, {type:"interrupt"},
// {type:"text", text, now}, {type:"connected", attempt, transport, rtcFailed, audio?, at, now},
// {type:"failed", attempt, error}, {type:"lost", attempt, info}, {type:"tick", now},
// {type:"server", attempt, event, samples?, now}, {type:"player", msg, now},
// {type:"suspend", reason, now}, {type:"resume", now}, {type:"blocked"}.
import * as P from "./protocol.js";

// The server sends [ext] omni.heartbeat every 2 s: this long with no event at all is a dead server
// or network (a killed machine sends no close frame, and a browser cannot see WebSocket pings).
export const SILENT_MS = 5000;
// Finished replies kept after their audio is done, so a late report about one is still matched
// (response.omni.timings follows response.done; the player acks a drop); older ones are forgotten.
export const RETIRED_MAX = 8;
// WebRTC: the server's track plays a reply in real time from its first audio; the <audio>
// element's jitter buffer adds a little. Without timings a finished reply is over this much later.
export const PLAYOUT_MARGIN_MS = 250, TIMINGS_WAIT_MS = 1000;

export function initialState() {
  return {
    phase: "idle", attempt: 0, transport: null, audio: true, link: null, muted: false, session: null, callStarted: null,
    current: null, audible: null, responses: {}, retired: [],
    speech: null, lastStop: null, lastHeard: 0, audibleUntil: null, paused: null, typed: 0, effects: [],
  };
}

const isLive = (s) => s.phase !== "idle" && s.phase !== "error";

const newReply = (id, tStop) => ({ id, itemId: null, tStop, pageMs: null, heardAt: null, received: 0, played: 0,
  // audio: none (nothing pushed) | queued (in the player) | dropping (drop sent) | over (ended or dropped)
  audio: "none", done: false, status: null, dead: false, truncate: false });

/** A reply's bookkeeping, live or recently retired; null when unknown. */
export function replyOf(s, id) {
  return s.responses[id] ?? s.retired.findLast((r) => r.id === id) ?? null;
}

function setReply(s, id, fields) {
  if (s.responses[id]) return { ...s, responses: { ...s.responses, [id]: { ...s.responses[id], ...fields } } };
  return { ...s, retired: s.retired.map((r) => (r.id === id ? { ...r, ...fields } : r)) };
}

/** Live replies the user hears or is about to hear: what an interrupt cuts. */
function heardOrComing(s) {
  return Object.values(s.responses).filter((r) => !r.dead &&
    (r.id === s.current || r.id === s.audible || r.audio === "queued")).map((r) => r.id);
}

/** What the page shows, derived from the state only (app.js renders it). */
export function view(s) {
  return { badge: s.paused ? "paused" : s.phase, calling: isLive(s), connected: !!s.transport, link: s.link,
    muted: s.muted, interruptible: !!s.transport && heardOrComing(s).length > 0, downloads: s.callStarted != null,
    resumeTap: !!s.paused?.tap };
}

// A reply leaves `responses` once it is done at the server and its audio is over: per-turn
// bookkeeping never grows with the conversation.
function settle(s) {
  let responses = s.responses, retired = s.retired;
  for (const r of Object.values(s.responses)) {
    const over = r.audio === "none" || r.audio === "over";
    if (!r.done || !over || r.id === s.current || r.id === s.audible) continue;
    if (responses === s.responses) responses = { ...responses };
    delete responses[r.id];
    retired = [...retired, r].slice(-RETIRED_MAX);
  }
  return responses === s.responses ? s : { ...s, responses, retired };
}

function firstAudio(s, id, now, fx) {
  const r = s.responses[id];
  if (r.pageMs != null || r.tStop == null) return s;
  fx.push({ do: "firstAudio", id, ms: now - r.tStop });
  return setReply(s, id, { pageMs: now - r.tStop });
}

function drop(s, id, truncate, fx) {
  const r = s.responses[id];
  if (!r || r.dead) return s;
  fx.push({ do: "meta", id, text: "interrupted", cut: true }, { do: "player", cmd: "drop", id });
  return setReply(s, id, { dead: true, truncate, audio: "dropping" });
}

/** Stop what the user hears now (barge-in or Interrupt); `cancel` also sends response.cancel. */
function bargeIn(s, cancel, fx) {
  const ws = s.transport === "websocket";          // on WebRTC the server knows what was played
  const truncate = ws && s.audio;                  // a text-only call has no audio to say was heard
  // WebRTC: a reply that finished generating still plays from the server's queue, so cancel it too.
  const live = s.current || (!ws ? s.audible : null);
  if (cancel && live) fx.push({ do: "send", msg: "cancel", id: live });
  for (const id of heardOrComing(s)) s = drop(s, id, truncate, fx);
  s = { ...s, audible: null, current: null, audibleUntil: null };
  return s.transport ? { ...s, phase: "listening" } : s;   // the audio stopped now, whatever the server says later
}

/** The call is over (hang-up, failure, loss): everything still playing is cut, media released. */
function endCall(s, fx, phase, link = s.link) {
  for (const id of Object.keys(s.responses)) s = drop(s, id, false, fx);
  fx.push({ do: "teardown" });
  const retired = [...s.retired, ...Object.values(s.responses)].slice(-RETIRED_MAX);
  return { ...s, phase, link, attempt: s.attempt + 1, transport: null, current: null, audible: null,
    responses: {}, retired, speech: null, lastStop: null, lastHeard: 0, audibleUntil: null, paused: null };
}

function start(s, fx) {
  if (isLive(s)) return s;
  const attempt = s.attempt + 1;
  fx.push({ do: "clearError" }, { do: "open", attempt });
  return { ...s, phase: "connecting", attempt };
}

function connected(s, ev, fx) {
  if (ev.attempt !== s.attempt || !isLive(s) || s.transport) return s;
  const link = ev.transport === "webrtc" ? "WebRTC" : "WebSocket" + (ev.rtcFailed ? " (WebRTC failed)" : "");
  fx.push({ do: "send", msg: "session" });
  if (s.muted || s.paused) fx.push({ do: "mute", on: true });
  return { ...s, phase: s.phase === "connecting" ? "listening" : s.phase, transport: ev.transport, audio: ev.audio !== false, link,
    lastHeard: ev.now, callStarted: ev.at };
}

function lost(s, info, fx) {
  fx.push({ do: "error", lost: info });
  return endCall(s, fx, "error", "disconnected");
}

function sendText(s, { text, now }, fx) {
  if (!s.transport || !text.trim()) return s;
  if (heardOrComing(s).length) s = bargeIn(s, true, fx);
  const typed = s.typed + 1;
  fx.push({ do: "userText", itemId: `typed_${typed}`, text: text.trim(), append: false },
    { do: "send", msg: "text", text: text.trim() }, { do: "send", msg: "create" });
  return { ...s, typed, lastStop: now, phase: "thinking" };  // latency counts from the send, as from end of speech
}

/** WebRTC: a reply is heard from its first spoken text (its audio goes out with it). */
function heard(s, r, now, fx) {
  if (s.transport !== "webrtc" || r.heardAt != null) return s;
  s = setReply({ ...s, audible: r.id, audibleUntil: null, phase: "speaking" }, r.id, { heardAt: now });
  return firstAudio(s, r.id, now, fx);
}

/** WebRTC: the heard reply is over at `until` (now or later: the page is woken then). */
function audibleTill(s, until, now, fx) {
  if (now >= until) return { ...s, audible: null, audibleUntil: null, phase: s.phase === "speaking" ? "listening" : s.phase };
  fx.push({ do: "wake", inMs: until - now });
  return { ...s, audibleUntil: until };
}

function onPlayer(s, { msg: m, now }, fx) {
  const r = replyOf(s, m.id);
  if (!r) return s;
  if (m.ev === "played") return r.played === m.samples ? s : setReply(s, r.id, { played: m.samples });
  if (m.ev === "dropped") {
    s = setReply(s, r.id, { played: m.samples, audio: "over" });
    if (r.truncate && r.itemId && s.transport) {
      const audioEndMs = (Math.min(m.samples, r.received) * 1000) / P.AUDIO_RATE;
      fx.push({ do: "truncate", id: r.id, itemId: r.itemId, audioEndMs });
    }
    return s;
  }
  if (s.responses[r.id] !== r || r.dead) return s;   // a late report of a reply already cut
  if (m.ev === "started") {
    // The player plays in push order: every other queued reply is behind this one.
    for (const o of Object.values(s.responses)) if (o.id !== r.id && o.audio === "queued") s = setReply(s, o.id, { audio: "over" });
    return firstAudio({ ...s, audible: r.id, phase: "speaking" }, r.id, now, fx);
  }
  if (m.ev === "ended") {
    s = setReply(s, r.id, { audio: "over" });
    if (s.audible === r.id) s = { ...s, audible: null };
    return !s.current && s.transport && s.phase === "speaking" ? { ...s, phase: "listening" } : s;
  }
  return s;
}

function responseDone(s, e, fx) {
  const id = e.response.id, r = s.responses[id], status = e.response.status;
  if (!r) return s;
  const cut = status === "cancelled" || r.dead;
  const bits = [cut ? "interrupted" : status === "completed" ? "" : status,
    r.pageMs != null ? `first audio ${Math.round(r.pageMs)} ms after you stopped` : ""];
  fx.push({ do: "player", cmd: "end", id }, { do: "turnStatus", id, status },
    { do: "meta", id, text: bits.filter(Boolean).join(" · "), cut });
  const wasCurrent = s.current === id;
  s = setReply({ ...s, current: wasCurrent ? null : s.current }, id, { done: true, status });
  if (s.transport === "webrtc" && s.audible === id) {
    // the server stops its track on a cancel; else it plays on: the timings that follow say how long
    const now = s.lastHeard;                                   // this event's arrival
    return audibleTill(s, cut ? now : now + TIMINGS_WAIT_MS, now, fx);
  }
  // a reply with no audio (text only): nothing will play, the turn is over
  const silent = !s.audible && (s.transport === "websocket" ? !r.received : r.heardAt == null);
  return wasCurrent && silent && s.phase === "thinking" ? { ...s, phase: "listening" } : s;
}

function timings(s, r, t, now, fx) {
  fx.push({ do: "timings", id: r.id, timings: t });
  if (s.transport !== "webrtc" || s.audible !== r.id || r.heardAt == null || !(t.audio_ms >= 0)) return s;
  return audibleTill(s, r.heardAt + t.audio_ms + PLAYOUT_MARGIN_MS, now, fx);
}

function onServer(s, ev, fx) {
  if (ev.attempt !== s.attempt || !isLive(s)) return s;   // a late event of an ended call
  const e = ev.event, id = e.response_id;
  s = { ...s, lastHeard: ev.now };
  let r = null;
  if (id && e.type !== P.S.RESPONSE_DONE) {
    r = s.responses[id];
    if (e.type === P.S.RESPONSE_TIMINGS) r = replyOf(s, id);   // they follow response.done
    if (!r || r.dead) return s;                                 // stale: dropped on sight
    if (e.item_id && !r.itemId) s = setReply(s, id, { itemId: e.item_id });
  }
  switch (e.type) {
    case P.S.SESSION_CREATED: case P.S.SESSION_UPDATED: return { ...s, session: e.session };
    case P.S.SPEECH_STARTED:
      fx.push({ do: "userTurn", itemId: e.item_id, durationMs: null });
      s = { ...s, speech: { itemId: e.item_id, startMs: e.audio_start_ms } };
      if (heardOrComing(s).length) s = bargeIn(s, false, fx);   // the server cancels its reply itself
      return { ...s, phase: "user_speaking" };
    case P.S.SPEECH_STOPPED: {
      const startMs = s.speech?.itemId === e.item_id ? s.speech.startMs : null;
      fx.push({ do: "userTurn", itemId: e.item_id, durationMs: e.audio_end_ms - (startMs ?? e.audio_end_ms) });
      return { ...s, speech: null, lastStop: ev.now, phase: "thinking" };
    }
    case P.S.RESPONSE_CREATED: {
      const rid = e.response.id;
      fx.push({ do: "meta", id: rid, text: "…", cut: false });
      return { ...s, current: rid, lastStop: null, responses: { ...s.responses, [rid]: newReply(rid, s.lastStop) } };
    }
    case P.S.OUTPUT_ITEM_ADDED: return r && e.item?.id ? setReply(s, id, { itemId: e.item.id }) : s;
    case P.S.AUDIO_DELTA:
      if (!r) return s;
      fx.push({ do: "player", cmd: "push", id, samples: ev.samples });
      return setReply(s, id, { received: r.received + (ev.samples?.length ?? 0), audio: "queued" });
    case P.S.TRANSCRIPT_DELTA: fx.push({ do: "text", id, delta: e.delta }); return r ? heard(s, r, ev.now, fx) : s;
    case P.S.TEXT_DELTA: fx.push({ do: "text", id, delta: e.delta }); return s;
    case P.S.REASONING_DELTA: fx.push({ do: "reasoning", id, delta: e.delta }); return s;
    case P.S.VIDEO_STATS: fx.push({ do: "videoStats", stats: P.videoStatsOf(e) }); return s;
    case P.S.RESPONSE_DONE: return responseDone(s, e, fx);
    case P.S.RESPONSE_TIMINGS: return timings(s, r, P.timingsOf(e), ev.now, fx);
    case P.S.USER_TRANSCRIPT_DELTA: fx.push({ do: "userText", itemId: e.item_id, text: e.delta, append: true }); return s;
    case P.S.USER_TRANSCRIPT_DONE: fx.push({ do: "userText", itemId: e.item_id, text: e.transcript, append: false }); return s;
    case P.S.USER_TRANSCRIPT_FAILED: fx.push({ do: "userText", itemId: e.item_id, text: "(no transcript)", append: false }); return s;
    case P.S.ERROR: fx.push({ do: "serverError", error: P.errorOf(e) }); return s;
    default: return s;
  }
}

function tick(s, { now }, fx) {
  if (s.audibleUntil != null && now >= s.audibleUntil) s = audibleTill(s, s.audibleUntil, now, fx);
  // in the background timers stall and events queue up: no verdict until the page is back
  if (s.transport && !s.paused && s.lastHeard && now - s.lastHeard > SILENT_MS) return lost(s, { silent: true }, fx);
  return s;
}

/** The page went to the background: nothing is heard now, so cut what was playing and mute. */
function suspend(s, { reason }, fx) {
  if (!isLive(s) || s.paused) return s;
  if (s.transport && heardOrComing(s).length) s = bargeIn(s, true, fx);
  fx.push({ do: "mute", on: true });
  return { ...s, paused: { reason, tap: false } };
}

const HANDLERS = {
  start: (s, _ev, fx) => start(s, fx),
  reconnect: (s, _ev, fx) => start(isLive(s) ? endCall(s, fx, "idle") : s, fx),
  hangup: (s, _ev, fx) => (isLive(s) ? endCall(s, fx, "idle", "not connected") : s),
  dismiss: (s, _ev, fx) => { fx.push({ do: "clearError" }); return s.phase === "error" ? { ...s, phase: "idle" } : s; },
  connected,
  failed: (s, ev, fx) => {
    if (ev.attempt !== s.attempt || !isLive(s)) return s;      // an attempt the user already ended
    fx.push({ do: "error", failure: ev.error });
    return endCall(s, fx, "error");
  },
  lost: (s, ev, fx) => (ev.attempt === s.attempt && isLive(s) ? lost(s, ev.info, fx) : s),
  tick,
  interrupt: (s, _ev, fx) => (view(s).interruptible ? bargeIn(s, true, fx) : s),
  text: sendText,
  mute: (s, _ev, fx) => { fx.push({ do: "mute", on: !s.muted || !!s.paused }); return { ...s, muted: !s.muted }; },
  settings: (s, _ev, fx) => { if (s.transport) fx.push({ do: "send", msg: "session" }); return s; },
  suspend,
  resume: (s, ev, fx) => {
    if (!s.paused) return s;
    fx.push({ do: "mute", on: s.muted });
    return { ...s, paused: null, lastHeard: s.transport ? ev.now : s.lastHeard };   // the watchdog starts afresh
  },
  blocked: (s) => (s.paused && !s.paused.tap ? { ...s, paused: { ...s.paused, tap: true } } : s),
  player: onPlayer,
  server: onServer,
};

/** The next state; `effects` lists what this transition asks of the page (empty: nothing). */
export function reduce(s, ev) {
  const handler = HANDLERS[ev.type];
  if (!handler) throw new Error(`unknown event ${ev.type}`);
  const fx = [];
  const next = handler(s, ev, fx);
  if (next === s && !fx.length) return s;             // nothing happened: the same object
  return { ...settle(next), effects: fx };
}
