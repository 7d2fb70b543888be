"""Browser E2E in WebKit, Safari's engine (Debian's WebKitGTK, webkit_driver.py), in a desktop and
an iOS-like profile (audio and media need a tap, audio interrupted while hidden). WebKitGTK has no
WebRTC, so the page talks over WebSocket, as it does wherever WebRTC is missing.

One call per profile, as a person makes it: a saved microphone and camera that are gone (Start
works on the defaults, with a notice), a voice clip recorded (and nothing after Stop changes the
page), the call on WebSocket, a typed message whose reply is heard, Interrupt, the page hidden
(the real window: a page visibility change) and the AudioContext suspended behind its back (it
comes back by itself, or with one tap), iPad layouts, Hang up ("camera off"). WebKit's own console
output is captured from the browser and must stay empty throughout.
"""

from __future__ import annotations

import re
import time

import pytest
from e2e_helpers import IPAD_SIZES, LAYOUT_JS, LONG_CONVERSATION_JS, check_layout
from test_features import hold_reply_until_cancelled

BADGE = "document.querySelector('#state').dataset.state"


def badge_is(state: str) -> str:
    return f"{BADGE} === '{state}'"


def record_clip(p) -> None:
    """Record my voice for 5.3 s+; Stop ends it cleanly: no worklet message rewrites the page after."""
    p.click("#rec-btn")
    p.wait("document.querySelector('#rec-btn').textContent === 'Stop'")
    p.wait("parseFloat(document.querySelector('#rec-info').textContent.split('…')[1]) >= 5.3", 20, "5.3 s recorded")
    p.click("#rec-btn")
    info = p.text("#rec-info")
    assert re.fullmatch(r"\d+\.\d s recorded", info), info
    time.sleep(0.6)  # a late message of the stopped worklet would show "recording… 5.4 s" by now
    assert p.text("#rec-info") == info and p.js("return document.querySelector('#rec-meter').value") == 0
    assert p.js("return !document.querySelector('#rec-play').disabled")
    p.click("#rec-play")


def start_on_stale_devices(p) -> None:
    """Saved devices that are gone: Start works on the defaults and says so; the call is on WebSocket."""
    p.click("#start")
    p.wait("window.omni.metrics.transport === 'websocket'", 20, "the call on WebSocket")
    assert p.text("#conn") == "WebSocket"
    notice = p.text("#notice-text")
    assert p.visible("#notice") and "microphone is not available" in notice and "camera" in notice, notice
    assert p.js("return localStorage.getItem('omni.devices')") == "{}"  # forgotten: the picker shows the truth
    p.wait("document.querySelector('#mic-level').value > 0.02", 10, "the mock microphone on the meter")
    p.wait("window.omni.cam && document.querySelector('#preview').videoWidth > 0", 10, "the camera preview")
    ref = p.wait("window.omni.session?.audio?.output?.omni_reference_audio", 10, "the recorded voice at the server")
    assert ref["format"] == "pcm16", ref
    p.click("#mute")  # the mock microphone's tones can set off the server's VAD: typed turns only from here


def reply_heard_then_interrupted(p) -> None:
    from selenium.webdriver.common.keys import Keys

    p.type("#text-input", "Hello, can you hear me?" + Keys.ENTER)
    assert p.js("return document.querySelector('#text-input').value") == ""
    p.wait(badge_is("speaking"), 60, "the reply heard")
    p.wait("window.omni.metrics.outRmsMax > 0.01", 10, "reply audio on the output")
    p.wait("document.querySelector('.transcript li.assistant .text').textContent.trim()", 10, "the reply's text")
    assert p.js("return !document.querySelector('#interrupt').disabled")
    p.click("#interrupt")
    assert p.js(f"return {BADGE}") == "listening"  # at once, whatever the server says later
    p.wait("window.omni.metrics.truncates.length > 0", 5, "the truncate of what was heard")
    p.wait("window.omni.metrics.events['conversation.item.truncated'] > 0", 10)
    assert "interrupted" in p.text(".transcript li.assistant .meta")


def backgrounded_and_back(p) -> None:
    """The real window hidden for 2 s while a reply plays: paused (what played is cut), then back."""
    from selenium.webdriver.common.keys import Keys

    p.type("#text-input", "Tell me more." + Keys.ENTER)
    p.wait(badge_is("speaking"), 60, "the second reply heard")
    cut = p.js("return window.omni.metrics.truncates.length")
    p.js("window.webkit.messageHandlers.omniTest.postMessage({hide_ms: 2000})")
    p.wait("document.visibilityState === 'hidden'", 3, "the page hidden")
    assert p.wait(badge_is("paused"), 2) and p.js("return document.querySelector('#state').textContent") == "paused"
    p.wait(f"window.omni.metrics.truncates.length > {cut}", 5, "the reply cut and reported when hidden")
    p.wait("document.visibilityState === 'visible'", 5, "the page shown again")
    p.wait(badge_is("listening"), 5, "the call resumed by itself")
    assert p.js("return window.omni.ctx.state") == "running" and not p.visible("#resume")


def audio_suspended_behind_its_back(p, shot) -> None:
    """The AudioContext suspended by someone else: paused; it restarts by itself. Then again with
    resume() refused outside a tap (as iOS does): one tap on Resume restarts it."""
    p.js(
        f"window.__badges = []; new MutationObserver(() => __badges.push({BADGE}))"
        ".observe(document.querySelector('#state'), {attributes: true, attributeFilter: ['data-state']});"
        "window.omni.ctx.suspend();"
    )
    p.wait("__badges.includes('paused') && " + badge_is("listening"), 5, "paused, then running again")
    assert p.js("return window.omni.ctx.state") == "running"
    p.js("const c = window.omni.ctx; c.resume = () => new Promise(() => {}); c.suspend();")  # forced fault
    p.wait("!document.querySelector('#resume').hidden", 5, "the Resume button")
    assert p.js(f"return {BADGE}") == "paused" and not p.visible("#start")  # Resume in its place
    p.driver.save_screenshot(str(shot))
    p.js("delete window.omni.ctx.resume")  # the real one again: a tap may resume
    p.click("#resume")
    p.wait(badge_is("listening"), 5, "resumed by the tap")
    assert p.js("return window.omni.ctx.state") == "running" and not p.visible("#resume") and p.visible("#start")


def layouts(p, profile: str, shots_dir) -> None:
    p.js(LONG_CONVERSATION_JS)
    for name, (w, h) in IPAD_SIZES.items():
        p.resize(w, h)
        p.frames()
        facts = p.js("return " + LAYOUT_JS)
        p.frames()
        p.driver.save_screenshot(str(shots_dir / f"webkit-{profile}-{name}.png"))
        check_layout(facts, f"WebKit {profile} {name}", w, h)


@pytest.mark.parametrize("profile", ["desktop", "ipad"])
def test_a_call_in_webkit(webkit_factory, server_factory, shots_dir, profile):
    server = server_factory(max_reply_tokens=300, max_speech_s=60.0)
    hold_reply_until_cancelled(server)
    p = webkit_factory(profile)
    p.resize(1024, 768)
    p.driver.get(server.url)
    # a microphone and camera chosen earlier that are gone now (a Bluetooth headset, rotated ids)
    p.js("localStorage.setItem('omni.devices', JSON.stringify({audioinput: 'gone-mic', videoinput: 'gone-cam'}))")
    p.driver.refresh()
    p.wait("window.omni && window.omni.health")
    assert p.console_works() == [], "WebKit console output while loading"
    assert "demo model" in p.text("#banner").lower()
    record_clip(p)
    start_on_stale_devices(p)
    reply_heard_then_interrupted(p)
    backgrounded_and_back(p)
    audio_suspended_behind_its_back(p, shots_dir / f"webkit-{profile}-paused.png")
    layouts(p, profile, shots_dir)
    p.click("#hangup")
    p.wait(badge_is("idle"))
    assert p.visible("#no-video") and not p.visible("#preview") and p.text("#no-video") == "camera off"
    assert not p.visible("#error"), p.text("#error-text")
    assert p.console() == [], "WebKit console output"
