// The call in the background: iPadOS suspends or interrupts the AudioContext and mutes capture
// when Safari is hidden or the screen locks, and gives them back (or not) when the page returns.
// This module watches for that (visibility, pagehide, the context's state, the mic track) and
// tells the state machine `suspend`; when the page is visible again it restarts playback and
// capture and tells it `resume`, or `blocked` when only a tap can restart them (`tap()`).
// Owns no call state: the reducer decides what a pause means (state.js).

const RESUME_WAIT_MS = 1000;   // how long a resume() outside a tap may take before a tap is asked for

export class Background {
  /** media: {ctx(): AudioContext|null, mic(): MediaStream|null, audioEl, reacquire(): Promise} */
  constructor({ dispatch, media }) {
    this.dispatch = dispatch; this.media = media;
    this.watched = new WeakSet();
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "hidden") this.suspend("hidden");
      else this.resume();
    });
    window.addEventListener("pagehide", () => this.suspend("pagehide"));
    window.addEventListener("pageshow", () => this.resume());
  }

  suspend(reason) { this.dispatch({ type: "suspend", reason, now: performance.now() }); }

  /** Follow an AudioContext: "interrupted" (Safari) or "suspended" behind the page's back pauses. */
  watchContext(ctx) {
    if (this.watched.has(ctx)) return;
    this.watched.add(ctx);
    ctx.addEventListener("statechange", () => {
      if (ctx.state === "running") return this.resume();
      if (ctx.state === "closed") return;
      this.suspend(ctx.state);                      // "interrupted" or "suspended"
      this.resume();                                // visible: try at once; a tap if that fails
    });
  }

  /** Follow a call's capture tracks: the system mutes them in the background (not the Mute button). */
  watchStream(stream) {
    for (const t of stream?.getTracks() ?? []) {
      if (this.watched.has(t)) continue;
      this.watched.add(t);
      t.addEventListener("mute", () => this.suspend("capture"));
      t.addEventListener("unmute", () => this.resume());
    }
  }

  /** Whether playback and capture run: a running context and a live, unmuted microphone (a call
   * without one, MiniCPM-V 4.5's camera + text, needs only the context). */
  running() {
    const ctx = this.media.ctx(), stream = this.media.mic(), mic = stream?.getAudioTracks()[0];
    return ctx?.state === "running" && (!stream || (!!mic && mic.readyState === "live" && !mic.muted));
  }

  /** Restart what the background stopped; outside a tap this may fail, and a tap is asked for. */
  async resume({ tap = false } = {}) {
    if (document.visibilityState === "hidden") return;
    const ctx = this.media.ctx();
    const resumed = ctx && ctx.state !== "running" ? ctx.resume().catch(() => {}) : null;   // first: inside the tap
    const el = this.media.audioEl;
    if (el?.srcObject && el.paused) el.play().catch(() => {});
    if (this.media.mic()?.getAudioTracks()[0]?.readyState === "ended") {
      await this.media.reacquire().catch((e) => console.warn("could not reopen the microphone:", e.message));
    }
    if (resumed) await Promise.race([resumed, new Promise((r) => setTimeout(r, tap ? 3 * RESUME_WAIT_MS : RESUME_WAIT_MS))]);
    this.dispatch({ type: this.running() ? "resume" : "blocked", now: performance.now() });
  }

  /** The Resume button (or any tap while paused): a user gesture lets the audio start again. */
  tap() { return this.resume({ tap: true }); }
}
