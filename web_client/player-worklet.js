// Playback jitter buffer (AudioWorklet). Reply audio arrives as 24 kHz Float32 chunks tagged with
// their response id; this plays them in order at the context rate (linear resampling).
//
// Policy:
// * start fast: a response starts once START_MS is queued (or its audio is complete);
// * never let delay grow: the server estimates what was heard as "time since the first chunk", so
//   after an underrun (a stall of the network or the model) the page is behind that clock; when
//   it is more than MAX_LAG_MS behind, queued audio is skipped until it is back on schedule;
// * drop by response id: {cmd:"drop", id} silences that response from the next render quantum
//   (128 frames, under 3 ms) and reports exactly how many of its samples were played.
//
// Messages in:  {cmd:"push", id, samples}  {cmd:"end", id}  {cmd:"drop", id}  {cmd:"config", startMs, maxLagMs}
// Messages out: {ev:"started", id}  {ev:"played", id, samples}  {ev:"dropped", id, samples}
//               {ev:"ended", id, samples}  {ev:"skipped", id, samples}

const SRC_RATE = 24000;

class Player extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = [];          // [{id, data: Float32Array, pos}]
    this.dead = new Set();    // dropped response ids: their late chunks are ignored
    this.ended = new Set();   // responses whose audio is complete
    this.played = new Map();  // id -> samples (24 kHz) actually rendered
    this.lag = new Map();     // id -> samples behind schedule (underruns)
    this.current = null;      // id now playing (started)
    this.frac = 0;            // fractional read position for resampling
    this.step = SRC_RATE / sampleRate;
    this.startSamples = 0.06 * SRC_RATE;
    this.maxLag = 0.3 * SRC_RATE;
    this.reportEvery = 0;
    this.port.onmessage = (e) => this.onMessage(e.data);
  }

  onMessage(m) {
    if (m.cmd === "push") {
      if (this.dead.has(m.id)) return;
      this.queue.push({ id: m.id, data: m.samples, pos: 0 });
    } else if (m.cmd === "end") {
      this.ended.add(m.id);
    } else if (m.cmd === "drop") {
      this.dead.add(m.id);
      this.queue = this.queue.filter((c) => c.id !== m.id);
      if (this.current === m.id) this.current = null;
      this.port.postMessage({ ev: "dropped", id: m.id, samples: this.played.get(m.id) || 0 });
    } else if (m.cmd === "config") {
      if (m.startMs !== undefined) this.startSamples = (m.startMs / 1000) * SRC_RATE;
      if (m.maxLagMs !== undefined) this.maxLag = (m.maxLagMs / 1000) * SRC_RATE;
    }
  }

  queuedFor(id) {
    let n = 0;
    for (const c of this.queue) if (c.id === id) n += c.data.length - c.pos;
    return n;
  }

  // Skip queued audio of `id` until it is at most START behind its schedule again.
  catchUp(id) {
    let lag = this.lag.get(id) || 0;
    if (lag <= this.maxLag) return;
    let skip = Math.floor(lag - this.startSamples), skipped = 0;
    while (skip > 0 && this.queue.length && this.queue[0].id === id) {
      const c = this.queue[0], n = Math.min(skip, c.data.length - c.pos);
      c.pos += n; skip -= n; skipped += n;
      if (c.pos >= c.data.length) this.queue.shift();
    }
    this.lag.set(id, lag - skipped);
    if (skipped) this.port.postMessage({ ev: "skipped", id, samples: skipped });
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    out.fill(0);
    if (!this.queue.length) {
      if (this.current !== null) {
        const id = this.current;
        if (this.ended.has(id)) {           // finished cleanly
          this.port.postMessage({ ev: "ended", id, samples: this.played.get(id) || 0 });
          this.current = null;
        } else {                            // underrun: we fall behind the server's clock
          this.lag.set(id, (this.lag.get(id) || 0) + out.length * this.step);
        }
      }
      return true;
    }
    const head = this.queue[0].id;
    if (this.current !== head) {            // a new response: wait for START_MS (or its end)
      if (this.queuedFor(head) < this.startSamples && !this.ended.has(head)) return true;
      this.current = head;
      this.frac = 0;
      this.port.postMessage({ ev: "started", id: head });
    }
    this.catchUp(head);
    let i = 0;
    while (i < out.length && this.queue.length && this.queue[0].id === head) {
      const c = this.queue[0];
      const a = c.data[c.pos], b = c.pos + 1 < c.data.length ? c.data[c.pos + 1] : a;
      out[i++] = a + (b - a) * this.frac;
      this.frac += this.step;
      const adv = Math.floor(this.frac);
      this.frac -= adv;
      c.pos += adv;
      this.played.set(head, (this.played.get(head) || 0) + adv);
      if (c.pos >= c.data.length) this.queue.shift();
    }
    for (let k = 1; k < outputs[0].length; k++) outputs[0][k].set(out);
    if (++this.reportEvery >= 8) {           // ~20 ms at 48 kHz
      this.reportEvery = 0;
      this.port.postMessage({ ev: "played", id: head, samples: this.played.get(head) || 0 });
    }
    return true;
  }
}

registerProcessor("omni-player", Player);
