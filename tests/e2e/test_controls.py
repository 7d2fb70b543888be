"""Browser E2E: the Mute button over both transports, a lost connection the person can recover
from with Reconnect (the server's model process is killed: a forced fault), and a voice recorded
in the page."""

from __future__ import annotations

import pytest

from e2e_helpers import metrics, open_page, wait_turn

MIC_LOOP_S = 18.6  # one_turn.wav: 2 s of silence, the utterance, then silence (looped here)
# A handle on every AudioWorkletNode the page makes, so the test can deliver a late worklet message.
KEEP_WORKLET_NODES = """
window.__nodes = [];
window.AudioWorkletNode = class extends AudioWorkletNode {
  constructor(ctx, name, opts) { super(ctx, name, opts); this.__name = name; window.__nodes.push(this); }
};
"""


@pytest.mark.parametrize("transport", ["websocket", "webrtc"])
def test_mute_silences_the_microphone_until_unmuted(server_factory, browser_factory, transport):
    server = server_factory(max_reply_tokens=40)
    page = open_page(
        browser_factory("one_turn.wav", loop=True), server, "websocket" if transport == "websocket" else "auto"
    )
    page.click("#start")
    page.click("#mute")  # muted while connecting, before the utterance
    page.wait_for_function(f"window.omni.metrics.transport === '{transport}'", timeout=20_000)
    assert page.inner_text("#mute") == "Unmute"
    page.wait_for_timeout(6_000)  # the utterance (2 s in) plays while muted
    events = metrics(page)["events"]
    assert "input_audio_buffer.speech_started" not in events, events
    assert "response.created" not in events, events
    page.click("#mute")
    assert page.inner_text("#mute") == "Mute"
    turn = wait_turn(page, timeout=int(MIC_LOOP_S * 1000) + 60_000)  # its next loop is heard
    assert turn["server"]["first_audio_ms"] > 0


def test_lost_connection_is_explained_and_reconnect_starts_a_new_session(server_factory, browser_factory):
    server = server_factory(max_reply_tokens=40)
    page = open_page(browser_factory("one_turn.wav", loop=True), server, "websocket")
    page.click("#start")
    page.wait_for_function("window.omni.metrics.transport === 'websocket'", timeout=20_000)
    for lane in server.app["worker"]._lanes:  # forced fault: the model processes die
        lane.proc.kill()
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)  # at the utterance's first unit
    # the server's error event shows first, then the close it precedes replaces it
    page.wait_for_function(
        "document.querySelector('#error-text').innerText.startsWith('Connection lost')", timeout=10_000
    )
    text = page.inner_text("#error-text")
    assert text.startswith("Connection lost") and "model process" in text and "context is lost" in text, text
    assert page.is_visible("#reconnect")
    assert page.inner_text("#st-conn") == "disconnected"
    page.click("#reconnect")
    page.wait_for_function("window.omni.metrics.transport === 'websocket'", timeout=60_000)
    assert not page.is_visible("#error")
    turn = wait_turn(page, timeout=int(MIC_LOOP_S * 1000) + 60_000)  # the new session answers
    assert turn["server"]["first_audio_ms"] > 0


@pytest.mark.parametrize("transport", ["websocket", "webrtc"])
def test_voice_recorded_in_the_page_is_checked_and_cloned(server_factory, browser_factory, transport):
    """Record my voice: too short is refused with a clear message; 5-15 s shows its length, can be
    played back, and reaches the server as the reference clip of the call, on either transport.
    Stop ends it cleanly: a message the worklet posted before it stopped changes nothing."""
    server = server_factory(max_reply_tokens=40)
    page = open_page(
        browser_factory("one_turn.wav", loop=True),
        server,
        "websocket" if transport == "websocket" else "auto",
        init_script=KEEP_WORKLET_NODES,
    )
    page.click("#rec-btn")
    page.wait_for_function("document.querySelector('#rec-btn').textContent === 'Stop'")
    page.wait_for_timeout(2_000)
    page.click("#rec-btn")
    page.wait_for_selector("#error:not([hidden])")
    assert "record at least 5 s" in page.inner_text("#error-text")
    assert page.is_disabled("#rec-play")
    page.click("#error-close")
    page.click("#rec-btn")
    page.wait_for_function("document.querySelector('#rec-btn').textContent === 'Stop'")
    page.wait_for_function("document.querySelector('#rec-meter').value > 0", timeout=20_000)  # the level moves
    page.wait_for_function(
        "parseFloat(document.querySelector('#rec-info').textContent.split('…')[1]) >= 6.5", timeout=20_000
    )
    page.click("#rec-btn")
    info = page.inner_text("#rec-info")
    seconds = float(info.split(" s recorded")[0])
    assert 6.0 <= seconds <= 8.0, info
    page.evaluate(
        """() => { const mic = window.__nodes.filter((n) => n.__name === "omni-mic").at(-1);
        mic.port.dispatchEvent(new MessageEvent("message", { data: { pcm: new Int16Array(480), level: 0.5 } })); }"""
    )  # late: it must not restart the label ("recording… 7.0 s") or the meter
    assert page.inner_text("#rec-info") == info and page.evaluate("document.querySelector('#rec-meter').value") == 0
    assert page.is_checked('input[name="voice"][value="record"]') and page.is_enabled("#rec-play")
    page.click("#rec-play")  # plays without a page error
    page.click("#start")
    page.wait_for_function(f"window.omni.metrics.transport === '{transport}'", timeout=20_000)
    page.wait_for_function("window.omni.session?.audio?.output?.omni_reference_audio", timeout=20_000)
    refs = server.call(
        lambda: [None if c.state.ref_16k is None else len(c.state.ref_16k) for c in server.app["conversations"]]
    )
    assert any(n and abs(n / 16000 - seconds) < 0.1 for n in refs), (refs, seconds)
    assert not page.is_visible("#error"), page.inner_text("#error-text")
