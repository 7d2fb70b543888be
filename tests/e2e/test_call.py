"""Browser E2E: a real Chromium page (fake camera, espeak WAV as the microphone) talks to the
omni server (embedded tiny model) over WebRTC and over WebSocket, inside a loopback-only netns."""

from __future__ import annotations

import importlib.util
import pytest

from e2e_helpers import full_turn, metrics, open_page


@pytest.mark.skipif(
    importlib.util.find_spec("streaming.gateway.webrtc") is None, reason="streaming.gateway.webrtc not there yet"
)
def test_full_turn_webrtc(server_factory, browser_factory):
    server = server_factory(max_reply_tokens=60)
    page = open_page(browser_factory("one_turn.wav", loop=True), server, "auto")
    full_turn(page, "webrtc")
    page.wait_for_function("window.omni.metrics.pair", timeout=10_000)  # read from getStats after connect
    m = metrics(page)
    assert "webrtcError" not in m
    assert m["pair"] and m["pair"].startswith("127.0.0.1:") and "→ 127.0.0.1:" in m["pair"], m["pair"]
    assert page.inner_text("#st-conn") == "WebRTC"
    assert "response.output_audio.delta" not in m["events"]


def test_full_turn_websocket(server_factory, browser_factory):
    server = server_factory(max_reply_tokens=60)
    page = open_page(browser_factory("one_turn.wav", loop=True), server, "websocket")
    full_turn(page, "websocket")
    m = metrics(page)
    assert m["events"].get("response.output_audio.delta", 0) > 0
    assert page.inner_text("#st-conn").startswith("WebSocket")


def test_websocket_fallback_when_webrtc_fails(server_factory, browser_factory):
    """'auto' picks WebRTC; if the offer fails (here: the page cannot create a peer connection
    signalling route) the page falls back to WebSocket by itself."""
    server = server_factory(max_reply_tokens=60)
    page = open_page(browser_factory("one_turn.wav", loop=True), server, "auto")
    page.route("**/v1/realtime/calls", lambda route: route.fulfill(status=404, body="no webrtc"))
    full_turn(page, "websocket")
    m = metrics(page)
    assert "404" in m["webrtcError"]
    assert "WebRTC failed" in page.inner_text("#st-conn")
