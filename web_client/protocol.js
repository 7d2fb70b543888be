// The wire protocol, client side: every event the page sends is built here, every event it
// reads is named here. Mirrors docs/protocol.md (OpenAI Realtime GA names + omni extensions).
// Nothing else in the page spells an event type or field name.

export const AUDIO_RATE = 24000;               // audio/pcm in and out: PCM16 LE mono 24 kHz

export const S = Object.freeze({                // server -> client types the page handles
  SESSION_CREATED: "session.created",
  SESSION_UPDATED: "session.updated",
  SPEECH_STARTED: "input_audio_buffer.speech_started",
  SPEECH_STOPPED: "input_audio_buffer.speech_stopped",
  COMMITTED: "input_audio_buffer.committed",
  ITEM_TRUNCATED: "conversation.item.truncated",
  RESPONSE_CREATED: "response.created",
  RESPONSE_DONE: "response.done",
  OUTPUT_ITEM_ADDED: "response.output_item.added",
  RESPONSE_TIMINGS: "response.omni.timings",
  HEARTBEAT: "omni.heartbeat",
  USER_TRANSCRIPT_DELTA: "conversation.item.input_audio_transcription.delta",
  USER_TRANSCRIPT_DONE: "conversation.item.input_audio_transcription.completed",
  USER_TRANSCRIPT_FAILED: "conversation.item.input_audio_transcription.failed",
  AUDIO_DELTA: "response.output_audio.delta",
  AUDIO_DONE: "response.output_audio.done",
  TRANSCRIPT_DELTA: "response.output_audio_transcript.delta",
  TRANSCRIPT_DONE: "response.output_audio_transcript.done",
  TEXT_DELTA: "response.output_text.delta",
  REASONING_DELTA: "response.reasoning_text.delta",
  VIDEO_STATS: "omni.video.stats",
  ERROR: "error",
});

let seq = 0;
const eventId = () => `evt_web_${Date.now().toString(36)}_${(seq++).toString(36)}`;
const ev = (type, fields = {}) => ({ type, event_id: eventId(), ...fields });

// ---- client -> server ----------------------------------------------------------------------

/** session.update. voice: {kind:"default"} | {kind:"wav", data:B64} | {kind:"pcm16", rate, data:B64};
 * prefs (prefs.js): instructions, temperature, vadThreshold, vadSilenceMs, textOnly, seed (null = default). */
export function sessionUpdate({ video = true, voice = null, prefs = {} } = {}) {
  // events: [ext] response.omni.timings and omni.heartbeat; transcription: the user's own words
  const session = { type: "realtime", omni: { video, events: true, seed: prefs.seed ?? null },
    instructions: prefs.instructions ?? "", output_modalities: [prefs.textOnly ? "text" : "audio"],
    audio: { input: { transcription: { model: "minicpm-o" } } } };
  if (prefs.temperature != null) session.temperature = prefs.temperature;
  const vad = { type: "server_vad" };
  if (prefs.vadThreshold != null) vad.threshold = prefs.vadThreshold;
  if (prefs.vadSilenceMs != null) vad.silence_duration_ms = prefs.vadSilenceMs;
  session.audio.input.turn_detection = vad;
  if (voice) {
    let ref = null;
    if (voice.kind === "wav") ref = { format: "wav", data: voice.data };
    else if (voice.kind === "pcm16") ref = { format: "pcm16", rate: voice.rate, data: voice.data };
    session.audio.output = { omni_reference_audio: ref };
  }
  return ev("session.update", { session });
}

/** session.update for a model that sees and reads but neither hears nor speaks (MiniCPM-V 4.5):
 * text replies only and no audio section at all (the server refuses audio fields for it);
 * `fps`: the camera frames a second that reach the model (1-6); prefs.thinking: replies think
 * first (the reasoning comes as [ext] response.reasoning_text events, never in the text). */
export function visionSessionUpdate({ video = true, fps = 2, prefs = {} } = {}) {
  const session = { type: "realtime",
    omni: { video, events: true, seed: prefs.seed ?? null, video_fps: fps, thinking: !!prefs.thinking },
    instructions: prefs.instructions ?? "", output_modalities: ["text"] };
  if (prefs.temperature != null) session.temperature = prefs.temperature;
  return ev("session.update", { session });
}

export const audioAppend = (b64) => ev("input_audio_buffer.append", { audio: b64 });
/** A camera frame; `capturedMs` (performance.now() at capture) only where the server packs frames by time. */
export const imageAppend = (dataUrl, capturedMs) =>
  ev("input_image_buffer.append", capturedMs == null ? { image: dataUrl } : { image: dataUrl, captured_ms: Math.round(capturedMs) });
/** A typed message: a user item, then a reply to it (answered with speech, as a spoken turn). */
export const textItem = (text) => ev("conversation.item.create",
  { item: { type: "message", role: "user", content: [{ type: "input_text", text }] } });
export const responseCreate = () => ev("response.create");
export const responseCancel = (responseId) => ev("response.cancel", responseId ? { response_id: responseId } : {});
export const itemTruncate = (itemId, audioEndMs) =>
  ev("conversation.item.truncate", { item_id: itemId, content_index: 0, audio_end_ms: Math.max(0, Math.floor(audioEndMs)) });

// ---- server -> client ----------------------------------------------------------------------

/** Parse one wire message into an event object, or null for something that is not an event. */
export function parse(data) {
  let obj;
  try { obj = typeof data === "string" ? JSON.parse(data) : JSON.parse(new TextDecoder().decode(data)); }
  catch { return null; }
  return obj && typeof obj.type === "string" ? obj : null;
}

/** The ms figures of a reply, from the [ext] `response.omni.timings` event; {} when absent. */
export function timingsOf(timingsEvent) {
  const t = timingsEvent?.timings;
  return t && typeof t === "object" ? t : {};
}

/** {fps, frames_total, packs_total} of the [ext] `omni.video.stats` event: the frames reaching the model. */
export function videoStatsOf(statsEvent) {
  const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : 0);
  return { fps: num(statsEvent?.fps), frames_total: num(statsEvent?.frames_total), packs_total: num(statsEvent?.packs_total) };
}

/** {type, code, message} of an error event. */
export function errorOf(errEvent) {
  const e = errEvent?.error || {};
  return { type: e.type || "error", code: e.code || "", message: e.message || "unknown error" };
}

/** The reference voice the server echoes in session.updated ({format, rate, size_bytes}) or null. */
export const echoedReference = (sessEvent) => sessEvent?.session?.audio?.output?.omni_reference_audio ?? null;

// ---- PCM16 helpers -------------------------------------------------------------------------

export function b64FromBytes(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

export function bytesFromB64(b64) {
  const s = atob(b64), out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/** base64 PCM16 LE -> Float32Array in [-1, 1). */
export function pcm16ToFloat(b64) {
  const bytes = bytesFromB64(b64);
  const view = new DataView(bytes.buffer, 0, bytes.length - (bytes.length % 2));
  const out = new Float32Array(view.byteLength / 2);
  for (let i = 0; i < out.length; i++) out[i] = view.getInt16(2 * i, true) / 32768;
  return out;
}

/** Int16Array (native LE on every browser we target) -> base64. */
export const int16ToB64 = (i16) => b64FromBytes(new Uint8Array(i16.buffer, i16.byteOffset, i16.byteLength));
