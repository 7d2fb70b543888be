// What a call is depends on the model family the server runs (/healthz `family`). MiniCPM-o 2.6
// ("o-2.6") hears and speaks: voice + camera, the page as it has always been. MiniCPM-V 4.5
// ("v-4.5") sees and reads but hears no audio: camera + text. The microphone stays off (and the
// page says why), the text box is the input, replies stream as text, a frame-rate setting (1-6 fps)
// picks how many camera frames a second reach the model, and the server's [ext] omni.video.stats
// shows how many do. This module owns that switch: the mode's DOM (body[data-family] shows the
// `.audio-only` or `.vision-only` parts, style.css), the session.update a call sends and how its
// frames are paced. The server refuses audio events for V-4.5, so nothing here sends them.
import * as P from "./protocol.js";
import * as ui from "./ui.js";

export const FAMILIES = Object.freeze({
  "o-2.6": { title: "MiniCPM-o 2.6", hears: true,
    hint: null },                                          // the server's own load_model_hint
  "v-4.5": { title: "MiniCPM-V 4.5", hears: false,
    hint: "omni serve --model openbmb/MiniCPM-V-4_5 --device cuda --dtype bfloat16",
    labels: { listening: "watching" } },            // it sees the camera between questions
});
export const DEFAULT_FAMILY = "o-2.6";   // no /healthz answer or an unknown family: the voice page
export const FPS_MIN = 1, FPS_MAX = 6, FPS_DEFAULT = 2;   // the server's `session.omni.video_fps` range
// Over the WebSocket the page paces the frames itself: o-2.6 takes one per 1-s unit.
const VOICE_FRAMES_PER_S = 1;

/** The frame rate a person chose (prefs `videoFps`), within what the server takes. */
export function fpsOf(prefs) {
  const n = Math.round(Number(prefs?.videoFps));
  return Number.isFinite(n) && n > 0 ? Math.min(FPS_MAX, Math.max(FPS_MIN, n)) : FPS_DEFAULT;
}

export class Family {
  constructor(key) {
    this.key = Object.hasOwn(FAMILIES, key) ? key : DEFAULT_FAMILY;
    Object.assign(this, FAMILIES[this.key]);
  }

  /** Whether a call opens the microphone and plays speech (false: camera + text). */
  get audio() { return this.hears; }

  /** Show this family's page: its controls, settings and wording. */
  apply() {
    document.body.dataset.family = this.key;
    if (this.hears) return;
    ui.relabelStates(this.labels);
    const input = ui.el("text-input");
    input.placeholder = "Ask about the camera (Enter to send)";
    input.setAttribute("aria-label", "Type a question");
    ui.el("mic-off-text").textContent = `Microphone off: ${this.title} hears no audio. ` +
      "It sees your camera: type your question, and the reply comes as text.";
  }

  /** The session.update of a call, from the person's settings (prefs.js) and the voice picker. */
  session({ video, voice, prefs }) {
    return this.hears ? P.sessionUpdate({ video, voice, prefs })
      : P.visionSessionUpdate({ video, fps: fpsOf(prefs), prefs });
  }

  /** Camera frames a second the page sends over the WebSocket (on WebRTC the server samples the track). */
  framesPerS(prefs) { return this.hears ? VOICE_FRAMES_PER_S : fpsOf(prefs); }

  /** Whether frames carry their capture time (`captured_ms`): V-4.5 packs them by time. */
  get stampsFrames() { return !this.hears; }

  /** "N fps reach the model" from omni.video.stats {fps, frames_total, packs_total}. */
  static statsText(st) {
    const fps = Math.round(st.fps * 10) / 10;
    const n = (k, one) => `${k} ${one}${k === 1 ? "" : "s"}`;
    return `${fps} fps reach the model (${n(st.frames_total, "frame")} in ${n(st.packs_total, "pack")})`;
  }
}
