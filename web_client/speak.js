// Reading text replies aloud with the browser's own speech synthesis (MiniCPM-V 4.5 writes, it
// does not speak): off by default, a setting. Sentences are spoken as they complete, so the voice
// starts before the reply ends; a cut reply (barge-in, Interrupt, hang-up) stops the voice at once.
const SENTENCE_END = /[.!?。！？…]+["')\]]*\s+|\n+/g;

export class Reader {
  /** enabled(): whether to read aloud now (the setting); synth: window.speechSynthesis or absent. */
  constructor({ enabled, synth = globalThis.speechSynthesis, Utterance = globalThis.SpeechSynthesisUtterance }) {
    this.enabled = enabled; this.synth = synth; this.Utterance = Utterance;
    this.pending = new Map();               // reply id -> text not spoken yet
  }

  get available() { return !!(this.synth && this.Utterance); }

  /** A piece of reply `id`'s text: the complete sentences in it are spoken. */
  text(id, delta) {
    if (!this.available || !this.enabled()) return;
    const buf = (this.pending.get(id) ?? "") + delta;
    let end = 0;
    for (const m of buf.matchAll(SENTENCE_END)) end = m.index + m[0].length;
    if (end) this.say(buf.slice(0, end));
    this.pending.set(id, buf.slice(end));
  }

  /** Reply `id` is over: the rest of its text is spoken (or dropped when it was cut). */
  done(id, cut) {
    if (!this.pending.has(id)) return;      // never read, or cut already
    const rest = this.pending.get(id);
    this.pending.delete(id);
    if (cut) this.stop();
    else if (rest && this.enabled()) this.say(rest);
  }

  say(text) {
    if (!text.trim()) return;
    this.synth.speak(new this.Utterance(text.trim()));
  }

  /** Silence now: what is queued is dropped too. */
  stop() {
    this.pending.clear();
    if (this.available) this.synth.cancel();
  }
}
