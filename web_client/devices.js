// Microphone, camera and speaker choice (kept in localStorage), and the camera flip for tablets.
// Labels are known only once the page may use the devices, so the lists are refreshed after
// Start and whenever a device comes or goes. The microphone and camera apply from the next Start;
// the speaker at once. A saved device that is gone (a Bluetooth headset, ids rotated by a
// site-data purge) is forgotten and the system default used, with a notice (`onGone`).
const STORE = "omni.devices";
const NAMES = { audioinput: "microphone", videoinput: "camera", audiooutput: "speaker" };
// what getUserMedia / setSinkId reject a device id that no longer exists with
const GONE = new Set(["OverconstrainedError", "NotFoundError"]);
const SELECTS = { audioinput: "mic-select", videoinput: "cam-select", audiooutput: "speaker-select" };
const $ = (id) => document.getElementById(id);

export class DevicePicker {
  constructor({ onSpeaker, onGone }) {
    try { this.chosen = JSON.parse(localStorage.getItem(STORE) || "{}") || {}; } catch { this.chosen = {}; }
    this.onSpeaker = onSpeaker; this.onGone = onGone;
    this.facing = "user";
    for (const [kind, id] of Object.entries(SELECTS)) {
      $(id).addEventListener("change", (e) => {
        this.save(kind, e.target.value);
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

  save(kind, id) {
    if (id) this.chosen[kind] = id; else delete this.chosen[kind];
    localStorage.setItem(STORE, JSON.stringify(this.chosen));
  }

  /** The saved device of `kind` is gone: forget it, show the default, and say so. */
  gone(kind) {
    this.save(kind, "");
    $(SELECTS[kind]).value = "";
    this.onGone(kind, NAMES[kind]);
  }

  /** getUserMedia for the microphone or camera; a saved device that is gone falls back to the default. */
  async open(kind) {
    const media = kind === "audioinput" ? "audio" : "video";
    const constraints = () => (kind === "audioinput" ? this.audio() : this.video());
    const asked = constraints();
    try { return await navigator.mediaDevices.getUserMedia({ [media]: asked }); }
    catch (e) {
      if (!asked.deviceId || !GONE.has(e.name)) throw e;
      this.gone(kind);
      return await navigator.mediaDevices.getUserMedia({ [media]: constraints() });
    }
  }

  /** Play through the saved speaker where the browser can choose (setSinkId); gone: the default. */
  async applySpeaker(...targets) {
    const id = this.speaker();
    if (!id) return;
    try { await Promise.all(targets.filter((t) => t?.setSinkId).map((t) => t.setSinkId(id))); }
    catch (e) {
      if (!GONE.has(e.name)) throw e;
      this.gone("audiooutput");
      await Promise.all(targets.filter((t) => t?.setSinkId).map((t) => t.setSinkId("").catch(() => {})));
    }
  }
}
