// WebRTC transport: mic + camera tracks to the server, reply speech back as an Opus track, the
// same JSON events on the data channel "oai-events" (no output_audio.delta here). Signalling is
// one POST of a complete (non-trickle) SDP offer to /v1/realtime/calls -> 201 with the answer.
import * as P from "./protocol.js";
import { TransportError } from "./transport_ws.js";

const GATHER_TIMEOUT_MS = 3000, CONNECT_TIMEOUT_MS = 10000;
// aiortc takes data-channel messages of at most 64 KiB; a voice clip is ~1 MB, so larger events go as
// omni.fragment pieces (docs/protocol.md). FRAGMENT_OVERHEAD leaves room for the piece's JSON.
const DEFAULT_MAX_MESSAGE = 65536, FRAGMENT_OVERHEAD = 256;
let fragmentSeq = 0;

/** The pieces to send for one event's JSON: itself when it fits, else omni.fragment messages. */
export function fragment(text, maxMessageBytes) {
  const bytes = new TextEncoder().encode(text);
  if (bytes.length <= maxMessageBytes) return [text];
  const pieceBytes = Math.floor((maxMessageBytes - FRAGMENT_OVERHEAD) / 4) * 3;   // base64 grows 4/3
  const count = Math.ceil(bytes.length / pieceBytes), id = `frag_${++fragmentSeq}`;
  const out = [];
  for (let i = 0; i < count; i++) {
    const piece = bytes.subarray(i * pieceBytes, (i + 1) * pieceBytes);
    let bin = "";
    for (let j = 0; j < piece.length; j += 8192) bin += String.fromCharCode(...piece.subarray(j, j + 8192));
    out.push(JSON.stringify({ type: "omni.fragment", id, index: i, count, data: btoa(bin) }));
  }
  return out;
}

export class WebRtcTransport {
  constructor({ onEvent, onClose, audioEl }) {
    this.kind = "webrtc";
    this.onEvent = onEvent; this.onClose = onClose; this.audioEl = audioEl;
    this.pc = null; this.dc = null; this.remoteStream = null; this.closedByUs = false;
  }

  /** Negotiate with the given local tracks; resolves on session.created over the data channel.
   * No `micStream`: a call without audio (MiniCPM-V 4.5): camera and events only. */
  async open({ key, micStream, camStream }) {
    const pc = new RTCPeerConnection({ iceServers: [] });
    this.pc = pc;
    for (const t of micStream?.getAudioTracks() ?? []) this.audioSender = pc.addTrack(t, micStream);
    if (camStream) for (const t of camStream.getVideoTracks()) this.videoSender = pc.addTrack(t, camStream);
    else this.videoSender = pc.addTransceiver("video", { direction: "sendonly" }).sender;   // m-line for later
    pc.ontrack = (e) => {
      if (e.track.kind !== "audio") return;
      this.remoteStream = e.streams[0] || new MediaStream([e.track]);
      this.audioEl.srcObject = this.remoteStream;   // Chrome feeds WebAudio only if an element plays it
      this.audioEl.play().catch(() => {});
    };
    const dc = pc.createDataChannel("oai-events");
    this.dc = dc;
    let settled = false, resolveCreated, rejectCreated;
    const created = new Promise((res, rej) => { resolveCreated = res; rejectCreated = rej; });
    dc.onmessage = (m) => {
      const e = P.parse(m.data);
      if (!e) return;
      if (!settled && e.type === P.S.SESSION_CREATED) { settled = true; resolveCreated(e); }
      this.onEvent(e);
    };
    const lost = () => { if (settled && !this.closedByUs) { this.closedByUs = true; this.onClose({ code: 0 }); } };
    dc.onclose = lost;
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed" || pc.connectionState === "closed") {
        if (!settled) { settled = true; rejectCreated(new TransportError("network", "WebRTC connection failed")); }
        lost();
      }
    };

    await pc.setLocalDescription(await pc.createOffer());
    await this.gathered(pc);
    let resp;
    try {
      resp = await fetch("/v1/realtime/calls", {
        method: "POST", body: pc.localDescription.sdp,
        headers: { "Content-Type": "application/sdp", ...(key ? { Authorization: "Bearer " + key } : {}) },
      });
    } catch (e) { this.close(); throw new TransportError("network", "signalling failed: " + e.message); }
    if (resp.status === 401) { this.close(); throw new TransportError("auth", "API key needed or wrong"); }
    if (resp.status === 503) { this.close(); throw new TransportError("busy", "server full"); }
    if (resp.status !== 201 && resp.status !== 200) {
      this.close(); throw new TransportError("setup", `WebRTC signalling answered ${resp.status}`);
    }
    await pc.setRemoteDescription({ type: "answer", sdp: await resp.text() });
    const timeout = new Promise((_, rej) => setTimeout(
      () => rej(new TransportError("network", "WebRTC did not connect in time")), CONNECT_TIMEOUT_MS));
    try { return await Promise.race([created, timeout]); }
    catch (e) { settled = true; this.close(); throw e; }
  }

  gathered(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(resolve, GATHER_TIMEOUT_MS);
      pc.addEventListener("icegatheringstatechange", () => {
        if (pc.iceGatheringState === "complete") { clearTimeout(t); resolve(); }
      });
    });
  }

  send(event) {
    if (!this.dc || this.dc.readyState !== "open") return;
    const limit = Math.min(this.pc.sctp?.maxMessageSize || DEFAULT_MAX_MESSAGE, DEFAULT_MAX_MESSAGE);
    for (const m of fragment(JSON.stringify(event), limit)) this.dc.send(m);
  }

  /** A MediaStream of the reply audio, for the level meter / latency analyser. */
  outputStream() { return this.remoteStream; }

  /** The server samples the video track at the session's `video_fps`: nothing to pace here. */
  setFrameRate() {}

  setVideo(on, camStream) {
    const track = on && camStream ? camStream.getVideoTracks()[0] : null;
    this.videoSender?.replaceTrack(track).catch(() => {});
  }

  /** A new microphone track in place of the old one (which ended), on the same sender. */
  replaceMic(stream) { this.audioSender?.replaceTrack(stream.getAudioTracks()[0]).catch(() => {}); }

  setMuted(on) {
    for (const s of this.pc?.getSenders() || []) if (s.track && s.track.kind === "audio") s.track.enabled = !on;
  }

  async stats() {
    const out = { pair: null, packetsReceived: 0 };
    if (!this.pc) return out;
    const rep = await this.pc.getStats();
    rep.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "audio") out.packetsReceived = s.packetsReceived;
      if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") {
        const l = rep.get(s.localCandidateId), r = rep.get(s.remoteCandidateId);
        out.pair = `${l?.address}:${l?.port} → ${r?.address}:${r?.port}`;
      }
    });
    return out;
  }

  close() {
    this.closedByUs = true;
    try { this.dc?.close(); } catch { /* ignore */ }
    try { this.pc?.close(); } catch { /* ignore */ }
    if (this.audioEl) this.audioEl.srcObject = null;
  }
}
