"""Browser E2E: the Mute button over both transports, and a lost connection the person can
recover from with Reconnect (the server's model process is killed: a forced fault)."""
from __future__ import annotations

import pytest

from e2e_helpers import metrics, open_page, wait_turn

MIC_LOOP_S = 18.6        # one_turn.wav: 2 s of silence, the utterance, then silence (looped here)


@pytest.mark.parametrize("transport", ["websocket", "webrtc"])
def test_mute_silences_the_microphone_until_unmuted(server_factory, browser_factory, transport):
    server = server_factory(max_reply_tokens=40)
    page = open_page(browser_factory("one_turn.wav", loop=True), server,
                     "websocket" if transport == "websocket" else "auto")
    page.click("#start")
    page.click("#mute")                                  # muted while connecting, before the utterance
    page.wait_for_function(f"window.omni.metrics.transport === '{transport}'", timeout=20_000)
    assert page.inner_text("#mute") == "Unmute"
    page.wait_for_timeout(6_000)                         # the utterance (2 s in) plays while muted
    events = metrics(page)["events"]
    assert "input_audio_buffer.speech_started" not in events, events
    assert "response.created" not in events, events
    page.click("#mute")
    assert page.inner_text("#mute") == "Mute"
    turn = wait_turn(page, timeout=int(MIC_LOOP_S * 1000) + 60_000)   # its next loop is heard
    assert turn["server"]["first_audio_ms"] > 0


def test_lost_connection_is_explained_and_reconnect_starts_a_new_session(server_factory, browser_factory):
    server = server_factory(max_reply_tokens=40)
    page = open_page(browser_factory("one_turn.wav", loop=True), server, "websocket")
    page.click("#start")
    page.wait_for_function("window.omni.metrics.transport === 'websocket'", timeout=20_000)
    for lane in server.app["worker"]._lanes:             # forced fault: the model processes die
        lane.proc.kill()
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)   # at the utterance's first unit
    text = page.inner_text("#error-text")
    assert text.startswith("Connection lost") and "model process" in text and "context is lost" in text, text
    assert page.is_visible("#reconnect")
    assert page.inner_text("#st-conn") == "disconnected"
    page.click("#reconnect")
    page.wait_for_function("window.omni.metrics.transport === 'websocket'", timeout=60_000)
    assert not page.is_visible("#error")
    turn = wait_turn(page, timeout=int(MIC_LOOP_S * 1000) + 60_000)   # the new session answers
    assert turn["server"]["first_audio_ms"] > 0
