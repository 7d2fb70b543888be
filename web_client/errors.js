// Errors a person must see, in plain words: a call that could not start, a call that was lost,
// an error event from the server. Wording and the API-key box only; the state machine decides when.
import * as ui from "./ui.js";
import { SILENT_MS } from "./state.js";

export const KEY_STORE = "omni.apiKey";
export const TLS_HINT = "omni serve --tls-self-signed --host 0.0.0.0";

/** A `failed` call: error {kind: insecure | media | auth | busy | network | setup, message, keyed}. */
export function explainFailure(e, health) {
  if (e.kind === "insecure") {
    ui.showError(["This page needs HTTPS for the microphone on a remote host. Start the server with ",
      [TLS_HINT], " and open https://<this-machine>:<port>/ (accept the certificate)."]);
  } else if (e.kind === "media") ui.showError(e.message);
  else transportFailed(e, health);
}

function transportFailed({ kind, message, keyed }, health) {
  // A refused WebSocket handshake (401) reaches a browser only as close 1006: /healthz tells why.
  if (kind === "network" && health?.auth_required) kind = "auth";
  if (kind === "auth") {
    localStorage.removeItem(KEY_STORE);
    ui.askForKey();
    ui.showError(keyed ? "The server refused this API key. Check it under Settings → API key and press Start."
      : "This server needs an API key. Enter it under Settings → API key and press Start.");
  } else if (kind === "busy") {
    ui.showError("The server is full (all sessions in use). Try again in a minute.", { reconnect: true });
  } else {
    console.warn("connect failed:", message);
    ui.showError(`Could not reach the server at ${location.host}: it may be stopped, or the network is down. ` +
      "Start it again (or check the network), then press Reconnect.", { reconnect: true });
  }
}

/** A call that was up and went away: the transport's close info, or {silent: true}. */
export function callLost(info, health) {
  if (info?.error?.code === "server_busy") return transportFailed({ kind: "busy" }, health);
  const why = info?.error ? `: ${info.error.message}` : info?.silent
    ? `: nothing heard from the server for ${SILENT_MS / 1000} s (it may have stopped, or the network dropped)` : "";
  ui.showError(`Connection lost${why}. This conversation's context is gone; Reconnect starts a new one.`,
    { reconnect: true });
}

/** An `error` event during a call; `keyed`: whether the page has an API key to send. */
export function serverError(err, health, keyed) {
  if (err.code === "response_cancel_not_active") { console.info(err.message); return; }
  if (err.code === "invalid_api_key") return transportFailed({ kind: "auth", keyed }, health);
  if (err.code === "server_busy") return transportFailed({ kind: "busy" }, health);
  ui.showError(`Server: ${err.message} (${err.code})`);
}
