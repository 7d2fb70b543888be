"""Browser E2E: a real Chromium page (fake camera, espeak WAV as the microphone) talks to the
omni server (embedded tiny model) over WebRTC and over WebSocket, inside a loopback-only netns."""
from __future__ import annotations

import importlib.util
import re

import pytest

metrics = None   # set by the autouse fixture below


TURN_TIMEOUT_MS = 90_000


@pytest.fixture(autouse=True)
def _metrics(page_metrics):
    global metrics
    metrics = page_metrics


def _open(browser, server, transport: str, viewport=(1280, 800)):
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    page.on("pageerror", lambda e: pytest.fail(f"page error: {e}"))
    page.goto(server.url)
    page.wait_for_function("window.omni && window.omni.health")
    if transport == "websocket":
        page.check('input[name="transport"][value="websocket"]')
    return page


def _wait_turn(page, timeout=TURN_TIMEOUT_MS) -> dict:
    """Until one reply has been heard at the page and finished at the server."""
    page.wait_for_function("window.omni.metrics.turns.some(t => t.pageMs != null && t.server)", timeout=timeout)
    return next(t for t in metrics(page)["turns"] if t.get("pageMs") is not None and t.get("server"))


def _full_turn(page, transport: str) -> dict:
    page.click("#start")
    page.wait_for_function(f"window.omni.metrics.transport === '{transport}'", timeout=20_000)
    turn = _wait_turn(page)
    m = metrics(page)
    assert m["outRmsMax"] > 0.01, f"no energy on the output analyser: {m['outRmsMax']}"
    text = page.locator(".transcript li.assistant .text").first.inner_text()
    assert text.strip(), "no assistant transcript on the page"
    assert re.fullmatch(r"\d+ ms", page.inner_text("#st-page")), page.inner_text("#st-page")
    assert re.fullmatch(r"\d+ ms", page.inner_text("#st-server"))
    assert "first_audio_ms" in turn["server"]
    user = page.locator(".transcript li.user .meta").first.inner_text()
    assert re.fullmatch(r"you spoke \d+\.\d s", user), user
    assert "demo model" in page.inner_text("#banner").lower()
    print(f"\n[{transport}] end of speech -> first audio at the page: {turn['pageMs']:.0f} ms; "
          f"server first_audio_ms {turn['server']['first_audio_ms']}; "
          f"unit prefill mean {turn['server'].get('unit_prefill_mean_ms')} ms; out RMS max {m['outRmsMax']:.3f}")
    return turn


@pytest.mark.skipif(importlib.util.find_spec("streaming.gateway.webrtc") is None,
                    reason="streaming.gateway.webrtc not there yet")
def test_full_turn_webrtc(server_factory, browser_factory):
    server = server_factory(max_reply_tokens=60)
    page = _open(browser_factory("one_turn.wav"), server, "auto")
    _full_turn(page, "webrtc")
    m = metrics(page)
    assert "webrtcError" not in m
    assert m["pair"] and m["pair"].startswith("127.0.0.1:") and "→ 127.0.0.1:" in m["pair"], m["pair"]
    assert page.inner_text("#st-conn") == "WebRTC"
    assert "response.output_audio.delta" not in m["events"]


def test_full_turn_websocket(server_factory, browser_factory):
    server = server_factory(max_reply_tokens=60)
    page = _open(browser_factory("one_turn.wav"), server, "websocket")
    _full_turn(page, "websocket")
    m = metrics(page)
    assert m["events"].get("response.output_audio.delta", 0) > 0
    assert page.inner_text("#st-conn").startswith("WebSocket")


def test_websocket_fallback_when_webrtc_fails(server_factory, browser_factory):
    """'auto' picks WebRTC; if the offer fails (here: the page cannot create a peer connection
    signalling route) the page falls back to WebSocket by itself."""
    server = server_factory(max_reply_tokens=60)
    page = _open(browser_factory("one_turn.wav"), server, "auto")
    page.route("**/v1/realtime/calls", lambda route: route.fulfill(status=404, body="no webrtc"))
    _full_turn(page, "websocket")
    m = metrics(page)
    assert "404" in m["webrtcError"]
    assert "WebRTC failed" in page.inner_text("#st-conn")
