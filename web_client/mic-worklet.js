// Microphone capture (AudioWorklet): input at the context rate -> 24 kHz PCM16 mono chunks of
// CHUNK samples (20 ms), plus an RMS level for the meter. Resampling is linear with a carried
// fractional position, so chunk boundaries do not click and the clock never drifts.
// Messages out: {pcm: Int16Array(480), level: number}. In: {cmd:"mute", on: bool}.

const DST_RATE = 24000, CHUNK = 480;

class Mic extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / DST_RATE;   // input samples per output sample
    this.pos = 0;                        // read position into `prev` + current block
    this.prev = 0;                       // last input sample of the previous block
    this.buf = new Int16Array(CHUNK);
    this.n = 0;
    this.sumSq = 0;
    this.muted = false;
    this.port.onmessage = (e) => { if (e.data.cmd === "mute") this.muted = !!e.data.on; };
  }

  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (!ch) return true;
    // Virtual signal: index -1 is `prev`, 0..len-1 is `ch`. pos is relative to index -1.
    const at = (k) => (k === 0 ? this.prev : ch[k - 1]);
    while (this.pos + 1 < ch.length + 1) {
      const k = Math.floor(this.pos), f = this.pos - k;
      let s = at(k) + (at(k + 1) - at(k)) * f;
      if (this.muted) s = 0;
      this.sumSq += s * s;
      this.buf[this.n++] = Math.max(-32768, Math.min(32767, Math.round(s * 32767)));
      if (this.n === CHUNK) {
        this.port.postMessage({ pcm: this.buf, level: Math.sqrt(this.sumSq / CHUNK) });
        this.buf = new Int16Array(CHUNK);
        this.n = 0;
        this.sumSq = 0;
      }
      this.pos += this.step;
    }
    this.pos -= ch.length;
    this.prev = ch[ch.length - 1];
    return true;
  }
}

registerProcessor("omni-mic", Mic);
