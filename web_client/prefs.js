// The conversation settings a person picks (instructions, sampling, turn taking, text-only
// replies), kept in this browser (localStorage) and sent in every session.update. A blank field
// is the server's default.
const STORE = "omni.settings";
const FIELDS = {                        // pref -> [element id, kind]
  instructions: ["set-instructions", "text"], temperature: ["set-temperature", "number"],
  vadThreshold: ["set-vad-threshold", "number"], vadSilenceMs: ["set-vad-silence", "int"],
  textOnly: ["set-text-only", "bool"], seed: ["set-seed", "int"],
  videoFps: ["set-video-fps", "int"], readAloud: ["set-read-aloud", "bool"], thinking: ["set-thinking", "bool"],   // V-4.5
};
const $ = (id) => document.getElementById(id);

function read(el, kind) {
  if (kind === "bool") return el.checked;
  if (kind === "text") return el.value;
  if (el.value.trim() === "") return null;
  const n = kind === "int" ? parseInt(el.value, 10) : parseFloat(el.value);
  return Number.isFinite(n) ? n : null;
}

export class Prefs {
  /** Fills the form from localStorage; `onChange(prefs)` after each edit (the call applies it). */
  constructor(onChange) {
    let saved = {};
    try { saved = JSON.parse(localStorage.getItem(STORE) || "{}") || {}; } catch { /* a corrupt entry: defaults */ }
    for (const [name, [id, kind]] of Object.entries(FIELDS)) {
      const el = $(id), v = saved[name];
      if (v != null) { if (kind === "bool") el.checked = !!v; else el.value = String(v); }
      el.addEventListener("change", () => { this.save(); onChange(this.current()); });
    }
  }

  current() {
    const out = {};
    for (const [name, [id, kind]] of Object.entries(FIELDS)) out[name] = read($(id), kind);
    return out;
  }

  save() { localStorage.setItem(STORE, JSON.stringify(this.current())); }
}
