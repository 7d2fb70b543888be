// The reply voice: the model's default, a clone from an uploaded clip, or one recorded here
// (5-15 s, level meter, playback check). `current()` is what goes into session.update.
import * as P from "./protocol.js";

const MIN_S = 5, MAX_S = 15, MAX_UPLOAD_S = 30;

export class VoicePicker {
  constructor(root, { getCtx, onChange, onError }) {
    this.root = root; this.getCtx = getCtx; this.onChange = onChange; this.onError = onError;
    this.clips = { upload: null, record: null };      // {kind, data, rate?, seconds}
    this.$ = (sel) => root.querySelector(sel);
    root.querySelectorAll('input[name="voice"]').forEach((r) => r.addEventListener("change", () => this.changed()));
    this.$("#voice-file").addEventListener("change", (e) => this.upload(e.target.files[0]));
    this.$("#rec-btn").addEventListener("click", () => (this.rec ? this.stopRecording() : this.record()));
    this.$("#rec-play").addEventListener("click", () => this.playBack());
  }

  mode() { return this.root.querySelector('input[name="voice"]:checked')?.value || "default"; }

  /** {kind:"default"} or the chosen clip; a missing clip falls back to the default voice. */
  current() {
    const m = this.mode();
    return m === "default" ? { kind: "default" } : this.clips[m] || { kind: "default" };
  }

  changed() { this.onChange(this.current()); this.render(); }

  render() {
    const u = this.clips.upload, r = this.clips.record;
    this.$("#voice-file-info").textContent = u ? `${u.name} (${u.seconds.toFixed(1)} s)` : "no clip yet";
    this.$("#rec-info").textContent = r ? `${r.seconds.toFixed(1)} s recorded` : `speak ${MIN_S}–${MAX_S} s`;
    this.$("#rec-play").disabled = !r;
  }

  async upload(file) {
    if (!file) return;
    try {
      const bytes = new Uint8Array(await file.arrayBuffer());
      const isWav = String.fromCharCode(...bytes.subarray(0, 4)) === "RIFF";
      // Anything that is not WAV (m4a from an iPad, mp3...) is decoded here and sent as PCM16.
      const ctx = this.getCtx();
      const audio = await ctx.decodeAudioData(bytes.slice().buffer);
      if (audio.duration < 1 || audio.duration > MAX_UPLOAD_S) throw new Error(`the clip is ${audio.duration.toFixed(1)} s; use 1–${MAX_UPLOAD_S} s (5–15 s is best)`);
      const clip = isWav ? { kind: "wav", data: P.b64FromBytes(bytes) } : pcmClip(audio.getChannelData(0), audio.sampleRate);
      this.clips.upload = { ...clip, seconds: audio.duration, name: file.name };
      this.root.querySelector('input[value="upload"]').checked = true;
      this.changed();
    } catch (e) { this.onError("Could not use that clip: " + e.message); }
  }

  async record() {
    if (this.starting) return;                         // a second tap while the microphone opens
    this.starting = true;
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true } });
    } catch (e) { this.starting = false; this.onError("Microphone denied: allow it in the browser to record a voice."); return; }
    const ctx = this.getCtx();
    try { await ctx.audioWorklet.addModule("mic-worklet.js"); }
    catch (e) { this.starting = false; stream.getTracks().forEach((t) => t.stop()); this.onError("Could not record: " + e.message); return; }
    this.starting = false;
    const src = ctx.createMediaStreamSource(stream);
    const node = new AudioWorkletNode(ctx, "omni-mic", { numberOfInputs: 1, numberOfOutputs: 0 });
    const chunks = [], t0 = performance.now();
    node.port.onmessage = (m) => {
      if (this.rec?.node !== node) return;           // a message the worklet posted before it was stopped
      chunks.push(m.data.pcm);
      this.$("#rec-meter").value = Math.min(1, m.data.level * 4);
      const s = (performance.now() - t0) / 1000;
      this.$("#rec-info").textContent = `recording… ${s.toFixed(1)} s`;
      if (s >= MAX_S) this.stopRecording();
    };
    src.connect(node);
    this.rec = { stream, src, node, chunks };
    this.$("#rec-btn").textContent = "Stop";
  }

  stopRecording() {
    const { stream, src, node, chunks } = this.rec;
    this.rec = null;
    node.port.onmessage = null;                        // no late message may touch the page now
    node.port.close();
    src.disconnect(); node.disconnect();
    stream.getTracks().forEach((t) => t.stop());
    this.$("#rec-btn").textContent = "Record";
    this.$("#rec-meter").value = 0;
    const total = chunks.reduce((n, c) => n + c.length, 0), pcm = new Int16Array(total);
    let o = 0;
    for (const c of chunks) { pcm.set(c, o); o += c.length; }
    const seconds = total / P.AUDIO_RATE;
    if (seconds < MIN_S) { this.onError(`That was ${seconds.toFixed(1)} s; record at least ${MIN_S} s.`); this.render(); return; }
    this.clips.record = { kind: "pcm16", rate: P.AUDIO_RATE, data: P.int16ToB64(pcm), seconds, pcm };
    this.root.querySelector('input[value="record"]').checked = true;
    this.changed();
  }

  playBack() {
    const r = this.clips.record;
    if (!r) return;
    const ctx = this.getCtx(), buf = ctx.createBuffer(1, r.pcm.length, P.AUDIO_RATE), ch = buf.getChannelData(0);
    for (let i = 0; i < r.pcm.length; i++) ch[i] = r.pcm[i] / 32768;
    const node = ctx.createBufferSource();
    node.buffer = buf; node.connect(ctx.destination); node.start();
  }
}

function pcmClip(f32, rate) {
  const i16 = new Int16Array(f32.length);
  for (let i = 0; i < f32.length; i++) i16[i] = Math.max(-32768, Math.min(32767, Math.round(f32[i] * 32767)));
  return { kind: "pcm16", rate: Math.min(48000, Math.max(8000, rate)), data: P.int16ToB64(i16) };
}
