// Reply-audio recorder (AudioWorklet): what the page plays, at the context rate, as PCM16 blocks
// posted about twice a second (fewer messages than one per 128-frame render quantum).
// Messages out: {pcm: Int16Array, flushed?: true}. In: {cmd: "flush"} posts what is buffered now.

const BLOCK = 24000;

class Recorder extends AudioWorkletProcessor {
  constructor() {
    super();
    this.buf = new Int16Array(BLOCK);
    this.n = 0;
    this.port.onmessage = (e) => { if (e.data.cmd === "flush") this.flush(true); };
  }

  flush(asked = false) {
    const out = this.buf.slice(0, this.n);
    this.port.postMessage({ pcm: out, flushed: asked }, [out.buffer]);
    this.n = 0;
  }

  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (!ch) return true;
    for (let i = 0; i < ch.length; i++) {
      this.buf[this.n++] = Math.max(-32768, Math.min(32767, Math.round(ch[i] * 32767)));
      if (this.n === BLOCK) this.flush();
    }
    return true;
  }
}

registerProcessor("omni-recorder", Recorder);
