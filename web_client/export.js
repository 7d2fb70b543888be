// Download of the conversation: the transcript as JSON and the reply audio as a WAV, both built
// in the page (nothing is stored on the server). The audio is what the page played, silence
// included, at most MAX_RECORD_S (PCM16 at 48 kHz: 29 MB for 5 minutes).
const MAX_RECORD_S = 300;

export class CallRecorder {
  constructor() { this.chunks = []; this.samples = 0; this.rate = 0; this.node = null; }

  /** Tap `source` (the node the reply audio passes through) on `ctx`. */
  async attach(ctx, source) {
    if (!this.node) {
      await ctx.audioWorklet.addModule("recorder-worklet.js");
      this.node = new AudioWorkletNode(ctx, "omni-recorder", { numberOfInputs: 1, numberOfOutputs: 0 });
      this.node.port.onmessage = (m) => {
        this.add(m.data.pcm);
        if (m.data.flushed) this.flushed?.();
      };
      source.connect(this.node);
    }
    this.rate = ctx.sampleRate;
  }

  add(pcm) {
    if (this.samples + pcm.length > MAX_RECORD_S * this.rate) return;   // the first minutes are kept
    this.chunks.push(pcm);
    this.samples += pcm.length;
  }

  clear() { this.chunks = []; this.samples = 0; }

  /** A WAV blob of what was recorded (PCM16 mono), the last half second included. */
  async wav() {
    if (this.node) {
      const done = new Promise((resolve) => { this.flushed = resolve; setTimeout(resolve, 1000); });
      this.node.port.postMessage({ cmd: "flush" });
      await done;
    }
    const data = new Uint8Array(44 + 2 * this.samples), v = new DataView(data.buffer);
    const str = (o, s) => { for (let i = 0; i < s.length; i++) v.setUint8(o + i, s.charCodeAt(i)); };
    str(0, "RIFF"); v.setUint32(4, 36 + 2 * this.samples, true); str(8, "WAVE"); str(12, "fmt ");
    v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, 1, true);
    v.setUint32(24, this.rate, true); v.setUint32(28, 2 * this.rate, true); v.setUint16(32, 2, true);
    v.setUint16(34, 16, true); str(36, "data"); v.setUint32(40, 2 * this.samples, true);
    let off = 44;
    for (const c of this.chunks) { data.set(new Uint8Array(c.buffer, c.byteOffset, c.byteLength), off); off += c.byteLength; }
    return new Blob([data], { type: "audio/wav" });
  }
}

/** Save a blob under `name` (an <a download> click). */
export function save(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}
