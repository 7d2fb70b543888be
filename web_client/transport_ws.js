// WebSocket transport: JSON events on /v1/realtime; mic audio as 24 kHz PCM16 appends (mic
// worklet), camera frames as JPEG `input_image_buffer.append` (o-2.6: once per 1-s unit; V-4.5:
// at the chosen frame rate, each with its capture time), reply audio as
// `response.output_audio.delta` (played by the app through the player worklet).
import * as P from "./protocol.js";

export class TransportError extends Error {
  constructor(kind, message) { super(message); this.kind = kind; }   // kind: auth | busy | network | setup
}

export class WsTransport {
  constructor({ onEvent, onClose, onLevel }) {
    this.kind = "websocket";
    this.onEvent = onEvent; this.onClose = onClose; this.onLevel = onLevel || (() => {});
    this.ws = null; this.mic = null; this.frameTimer = null; this.closedByUs = false;
    this.videoEl = null; this.fps = 1; this.stamped = false;
  }

  /** Open the socket and wait for session.created. Rejects with a TransportError. */
  open({ key }) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const protocols = ["realtime"];
    if (key) protocols.push("openai-insecure-api-key." + key);
    return new Promise((resolve, reject) => {
      let settled = false, lastError = null;
      const ws = new WebSocket(`${scheme}//${location.host}/v1/realtime`, protocols);
      this.ws = ws;
      const fail = (err) => { if (!settled) { settled = true; reject(err); } };
      ws.onmessage = (m) => {
        const e = P.parse(m.data);
        if (!e) return;
        if (e.type === P.S.ERROR) lastError = P.errorOf(e);
        if (!settled && e.type === P.S.SESSION_CREATED) { settled = true; resolve(e); }
        else if (!settled && e.type === P.S.ERROR) return;   // reported via close below
        this.onEvent(e);
      };
      ws.onclose = (c) => {
        this.stopMedia();
        if (!settled) {
          if (c.code === 1008 || lastError?.code === "invalid_api_key") fail(new TransportError("auth", "API key needed or wrong"));
          else if (c.code === 1013 || lastError?.code === "server_busy") fail(new TransportError("busy", lastError?.message || "server full"));
          else fail(new TransportError("network", `WebSocket closed (${c.code})`));
          return;
        }
        if (!this.closedByUs) this.onClose({ code: c.code, error: lastError });
      };
    });
  }

  send(event) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(event));
  }

  /** Start sending the microphone (none: a call without audio) and camera frames when `video`:
   * `fps` a second, with `captured_ms` when `stamped`. */
  async startMedia({ ctx, micStream, videoEl, video, fps = 1, stamped = false }) {
    this.fps = fps; this.stamped = stamped;
    if (video && videoEl) this.startFrames(videoEl);
    if (!micStream) return;
    await ctx.audioWorklet.addModule("mic-worklet.js");
    const src = ctx.createMediaStreamSource(micStream);
    this.mic = new AudioWorkletNode(ctx, "omni-mic", { numberOfInputs: 1, numberOfOutputs: 0 });
    this.mic.port.onmessage = (m) => {
      this.onLevel(m.data.level);
      this.send(P.audioAppend(P.int16ToB64(m.data.pcm)));
    };
    src.connect(this.mic);
    this.micSrc = src;
  }

  startFrames(videoEl) {
    const canvas = document.createElement("canvas");
    this.videoEl = videoEl;
    this.frameTimer = setInterval(() => {
      if (!videoEl.videoWidth) return;
      const scale = Math.min(1, 640 / videoEl.videoWidth);
      canvas.width = Math.round(videoEl.videoWidth * scale);
      canvas.height = Math.round(videoEl.videoHeight * scale);
      const capturedMs = performance.now();
      canvas.getContext("2d").drawImage(videoEl, 0, 0, canvas.width, canvas.height);
      this.send(P.imageAppend(canvas.toDataURL("image/jpeg", 0.7), this.stamped ? capturedMs : undefined));
      this.framesSent = (this.framesSent || 0) + 1;
    }, 1000 / this.fps);                        // o-2.6: the model's 1-s unit
  }

  setVideo(on, videoEl) {
    clearInterval(this.frameTimer); this.frameTimer = null;
    if (on && videoEl) this.startFrames(videoEl);
  }

  /** A new frame rate during the call (the frames already running are re-paced). */
  setFrameRate(fps) {
    if (fps === this.fps) return;
    this.fps = fps;
    if (this.frameTimer) this.setVideo(true, this.videoEl);
  }

  setMuted(on) { this.mic?.port.postMessage({ cmd: "mute", on }); }

  /** A new microphone stream into the same capture worklet (the old track ended). */
  replaceMic(stream, ctx) {
    if (!this.mic) return;
    try { this.micSrc?.disconnect(); } catch { /* already gone */ }
    this.micSrc = ctx.createMediaStreamSource(stream);
    this.micSrc.connect(this.mic);
  }

  stopMedia() {
    clearInterval(this.frameTimer); this.frameTimer = null;
    try { this.micSrc?.disconnect(); this.mic?.disconnect(); } catch { /* already gone */ }
    this.mic = null;
  }

  close() {
    this.closedByUs = true;
    this.stopMedia();
    try { this.ws?.close(1000); } catch { /* ignore */ }
  }
}
