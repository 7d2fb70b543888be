// DOM side of the page: states, transcript, numbers, banner and errors. No protocol here.

const $ = (id) => document.getElementById(id);
const STATE_TEXT = { idle: "idle", connecting: "connecting…", listening: "listening", user_speaking: "you are speaking",
  thinking: "thinking", speaking: "speaking", error: "call ended", paused: "paused" };
const STATE_TITLE = { paused: "The page was in the background: the microphone sends silence and replies stop until it is back." };

export const el = $;

/** A family's own words for some states (MiniCPM-V 4.5 watches, it does not listen). */
export function relabelStates(labels) { Object.assign(STATE_TEXT, labels); setState($("state").dataset.state); }

export function setState(state) {
  const s = $("state");
  s.className = "state " + state;
  s.dataset.state = state;
  s.textContent = STATE_TEXT[state] || state;
  s.title = STATE_TITLE[state] || "";
}

export function setConnection(text) { $("conn").textContent = text; $("st-conn").textContent = text; }

export function setCallButtons(inCall) {
  $("start").disabled = inCall;
  for (const id of ["mute", "hangup"]) $(id).disabled = !inCall;
  if (!inCall) $("interrupt").disabled = true;
}

/** The text box works only in a call. */
export function setInCall(on) { for (const id of ["text-input", "send-text"]) $(id).disabled = !on; }

export function setMuted(on) { $("mute").textContent = on ? "Unmute" : "Mute"; $("mute").classList.toggle("on", on); }

// ---- transcript ----------------------------------------------------------------------------
const bubbles = new Map();   // key -> <li>

function bubble(key, role) {
  let li = bubbles.get(key);
  if (!li) {
    li = document.createElement("li");
    li.className = role;
    li.dataset.role = role;
    li.innerHTML = '<span class="text"></span><span class="meta"></span>';
    $("transcript").appendChild(li);
    bubbles.set(key, li);
  }
  return li;
}

const scroll = () => { const t = $("transcript"); t.scrollTop = t.scrollHeight; };

export function userTurn(itemId, durationMs) {
  const li = bubble(itemId, "user");
  const text = li.querySelector(".text");
  if (!li.dataset.heard) text.textContent = "…";          // until the transcript comes
  li.querySelector(".meta").textContent = durationMs == null ? "speaking…" : `you spoke ${(durationMs / 1000).toFixed(1)} s`;
  scroll();
}

/** The user's words: a transcript (delta appended, or the whole one) or a typed message. */
export function userText(itemId, text, append) {
  const li = bubble(itemId, "user");
  const span = li.querySelector(".text");
  span.textContent = (append && li.dataset.heard ? span.textContent : "") + text;
  li.dataset.heard = "1";
  scroll();
}

export function assistantText(responseId, delta) {
  const span = bubble(responseId, "assistant").querySelector(".text");
  span.textContent += delta;
  scroll();
}

/** A thinking reply's reasoning (MiniCPM-V 4.5), folded away above its text. */
export function assistantReasoning(responseId, delta) {
  const li = bubble(responseId, "assistant");
  let box = li.querySelector(".reasoning");
  if (!box) {
    box = document.createElement("details");
    box.className = "reasoning";
    box.innerHTML = "<summary>thinking</summary><span></span>";
    li.prepend(box);
  }
  box.querySelector("span").textContent += delta;
  scroll();
}

export function assistantMeta(responseId, text, cancelled = false) {
  const li = bubble(responseId, "assistant");
  li.querySelector(".meta").textContent = text;
  li.classList.toggle("cancelled", cancelled);
}

// ---- numbers -------------------------------------------------------------------------------
export function setStat(id, text) { $(id).textContent = text; }

export function setLevel(id, v) { $(id).value = Math.min(1, v); }

// ---- banner and errors ---------------------------------------------------------------------
export function demoBanner(hint, title = "MiniCPM-o 2.6") {
  const b = $("banner");
  b.innerHTML = "";
  b.append("Demo model: this server runs the tiny embedded model, whose replies are noise by design. " +
    `To talk to ${title}, start it with `);
  const c = document.createElement("code");
  c.textContent = hint;
  b.append(c);
  b.hidden = false;
}

/** Show an error; `html` parts may be strings or [code] one-element arrays rendered as <code>. */
export function showError(parts, { reconnect = false } = {}) {
  const t = $("error-text");
  t.innerHTML = "";
  for (const p of [].concat(parts)) {
    if (Array.isArray(p)) { const c = document.createElement("code"); c.textContent = p[0]; t.append(c); }
    else t.append(p);
  }
  $("reconnect").hidden = !reconnect;
  $("error").hidden = false;
}

export function clearError() { $("error").hidden = true; }

/** Something the person should know that is not an error (a saved device gone); one line each. */
export function notice(text) {
  const t = $("notice-text");
  if ([...t.children].some((d) => d.textContent === text)) return;
  const line = document.createElement("div");
  line.textContent = text;
  t.append(line);
  $("notice").hidden = false;
}

export function clearNotice() { $("notice-text").innerHTML = ""; $("notice").hidden = true; }

export function askForKey(value) {
  $("key-box").hidden = false;
  $("settings").open = true;
  if (value) $("api-key").value = value;
  $("api-key").focus();
}

export function videoShown(on) { $("no-video").hidden = on; $("preview").hidden = !on; }

// ---- event log and latency history --------------------------------------------------------
const LOG_MAX = 300, CHART_TURNS = 20;
const t0 = performance.now();

function detailOf(e) {
  if (e.type === "error") return e.error?.code || "";
  if (e.type === "response.done") return e.response?.status || "";
  if (e.type === "response.omni.timings" && e.timings?.first_audio_ms != null) return `first audio ${Math.round(e.timings.first_audio_ms)} ms`;
  if (e.type === "conversation.item.input_audio_transcription.completed") return e.transcript || "";
  if (e.type === "conversation.item.create") return e.item?.content?.[0]?.text || "";
  return "";
}

/** One line per event in the Event log; repeats of one type (audio deltas) collapse into ×N. */
export function logEvent(dir, e) {
  const list = $("log-list"), last = list.lastElementChild;
  if (last && last.dataset.type === e.type && last.dataset.dir === dir) {
    const n = Number(last.dataset.n) + 1;
    last.dataset.n = n;
    last.querySelector(".n").textContent = ` ×${n}`;
    return;
  }
  const li = document.createElement("li");
  li.dataset.type = e.type; li.dataset.dir = dir; li.dataset.n = 1;
  li.className = dir === "out" ? "out" : e.type === "error" ? "err" : "in";
  const when = ((performance.now() - t0) / 1000).toFixed(2).padStart(7);
  li.textContent = `${when} ${dir === "out" ? "→" : "←"} ${e.type}`;
  const n = document.createElement("span"); n.className = "n"; li.append(n);
  const d = detailOf(e);
  if (d) { const s = document.createElement("span"); s.className = "detail"; s.textContent = " " + d.slice(0, 80); li.append(s); }
  list.append(li);
  while (list.childElementCount > LOG_MAX) list.firstElementChild.remove();
  if ($("event-log").open) list.scrollTop = list.scrollHeight;
}

const latencies = [];
/** The end-of-speech → first-audio figure of each turn, as bars (the last CHART_TURNS). */
export function latencyBar(ms) {
  latencies.push(ms);
  const svg = $("latency-chart"), shown = latencies.slice(-CHART_TURNS), top = Math.max(...shown, 1);
  const w = 100 / CHART_TURNS;
  svg.innerHTML = shown.map((v, i) => {
    const h = Math.max(2, (v / top) * 36);
    return `<rect x="${(i * w).toFixed(2)}" y="${(40 - h).toFixed(1)}" width="${(w * 0.8).toFixed(2)}" height="${h.toFixed(1)}"><title>turn ${latencies.length - shown.length + i + 1}: ${Math.round(v)} ms</title></rect>`;
  }).join("");
  svg.setAttribute("aria-label", `first-audio latency of the last ${shown.length} turns: ${shown.map(Math.round).join(", ")} ms`);
}

/** The transcript as shown: [{role, text, meta, interrupted}], oldest first. */
export function transcriptEntries() {
  return [...$("transcript").children].map((li) => ({
    role: li.dataset.role, text: li.querySelector(".text").textContent,
    meta: li.querySelector(".meta").textContent, interrupted: li.classList.contains("cancelled"),
  }));
}

export { latencies };
