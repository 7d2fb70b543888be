// The level meters: the microphone's and the reply's loudness, read every 10 ms from the call's
// analysers (on the WebSocket the mic meter is fed by the mic worklet instead). Meters only:
// "speaking" comes from events (state.js), never from these levels.
import * as ui from "./ui.js";

const EVERY_MS = 10, GAIN = 4;   // speech RMS is ~0.05-0.25: scaled to fill a meter

function rmsOf(analyser) {
  const buf = new Float32Array(analyser.fftSize);
  analyser.getFloatTimeDomainData(buf);
  let s = 0;
  for (const x of buf) s += x * x;
  return Math.sqrt(s / buf.length);
}

/** io: the page's handles ({analyser, micAnalyser}); muted(): whether the mic is muted; the reply's
 * loudest level goes to metrics.outRmsMax (tests read it). */
export function startMeters({ io, muted, metrics }) {
  setInterval(() => {
    if (!io.analyser) return;
    if (io.micAnalyser) ui.setLevel("mic-level", muted() ? 0 : rmsOf(io.micAnalyser) * GAIN);
    const rms = rmsOf(io.analyser);
    metrics.outRmsMax = Math.max(metrics.outRmsMax, rms);
    ui.setLevel("out-level", rms * GAIN);
  }, EVERY_MS);
}
