// Microphone, camera and speaker choice (kept in localStorage), and the camera flip for tablets.
// Labels are known only once the page may use the devices, so the lists are refreshed after
// Start and whenever a device comes or goes. The microphone and camera apply from the next Start;
// the speaker at once.
const STORE = "omni.devices";
const SELECTS = { audioinput: "mic-select", videoinput: "cam-select", audiooutput: "speaker-select" };
const $ = (id) => document.getElementById(id);

export class DevicePicker {
  constructor({ onSpeaker }) {
    try { this.chosen = JSON.parse(localStorage.getItem(STORE) || "{}") || {}; } catch { this.chosen = {}; }
    this.onSpeaker = onSpeaker;
    this.facing = "user";
    for (const [kind, id] of Object.entries(SELECTS)) {
      $(id).addEventListener("change", (e) => {
        this.chosen[kind] = e.target.value;
        localStorage.setItem(STORE, JSON.stringify(this.chosen));
        if (kind === "audiooutput") this.onSpeaker(e.target.value);
      });
    }
    // Speaker choice needs setSinkId (Chrome, Edge; not Safari/iPad): hide it where absent.
    $("speaker-row").hidden = !("setSinkId" in HTMLMediaElement.prototype);
    navigator.mediaDevices?.addEventListener?.("devicechange", () => this.refresh());
    this.refresh();
  }

  async refresh() {
    const list = await navigator.mediaDevices?.enumerateDevices?.().catch(() => []) || [];
    for (const [kind, id] of Object.entries(SELECTS)) {
      const sel = $(id), devices = list.filter((d) => d.kind === kind && d.deviceId);
      sel.innerHTML = "";
      sel.append(new Option("system default", ""));
      devices.forEach((d, i) => sel.append(new Option(d.label || `${kind} ${i + 1}`, d.deviceId)));
      sel.value = devices.some((d) => d.deviceId === this.chosen[kind]) ? this.chosen[kind] : "";
    }
  }

  audio() {
    const id = this.chosen.audioinput;
    return { echoCancellation: true, noiseSuppression: true, autoGainControl: true, ...(id ? { deviceId: { exact: id } } : {}) };
  }

  /** The camera: the chosen one, or after a flip the front/back one (`facingMode`). */
  video() {
    const id = this.chosen.videoinput, base = { width: { ideal: 640 }, height: { ideal: 480 } };
    return this.flipped || !id ? { ...base, facingMode: this.facing } : { ...base, deviceId: { exact: id } };
  }

  flip() { this.facing = this.facing === "user" ? "environment" : "user"; this.flipped = true; }

  speaker() { return this.chosen.audiooutput || ""; }
}
