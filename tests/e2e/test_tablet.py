"""Browser E2E (Chromium, WebRTC: the transport Safari on an iPad uses) of what a tablet user meets:
saved devices that are gone, the camera box after Hang up, the page sent to the background and
back, and the "speaking" badge and Interrupt on a page whose Web Audio cannot read the reply's
WebRTC track (as Safari may): they follow the server's events, not the reply's level."""

from __future__ import annotations

from e2e_helpers import metrics, open_page, wait_turn
from test_features import hold_reply_until_cancelled

BADGE = "document.querySelector('#state').dataset.state"
# Forced fault: every AnalyserNode reads silence, as Safari's may for a remote WebRTC track.
DEAF_ANALYSERS = """
AnalyserNode.prototype.getFloatTimeDomainData = function (a) { a.fill(0); };
AnalyserNode.prototype.getByteTimeDomainData = function (a) { a.fill(128); };
"""
# Forced page visibility (Chromium cannot hide a headless page; WebKit's test hides a real window).
VISIBILITY_JS = """(state) => {
  Object.defineProperty(document, "visibilityState", { configurable: true, get: () => state });
  Object.defineProperty(document, "hidden", { configurable: true, get: () => state === "hidden" });
  document.dispatchEvent(new Event("visibilitychange"));
}"""
# Record every badge change with its time, to measure how long "speaking" lasted.
BADGE_LOG = f"""() => {{ window.__badges = [];
  new MutationObserver(() => __badges.push([{BADGE}, performance.now()]))
    .observe(document.querySelector('#state'), {{ attributes: true, attributeFilter: ['data-state'] }}); }}"""


def mic_enabled(page) -> bool:
    return page.evaluate("window.omni.transport.pc.getSenders().find((s) => s.track?.kind === 'audio').track.enabled")


def test_saved_devices_that_are_gone_fall_back_and_hang_up_shows_camera_off(server_factory, browser_factory):
    server = server_factory(max_reply_tokens=40)
    page = open_page(browser_factory("one_turn.wav", loop=True), server, "auto")
    saved = "{audioinput: 'gone-mic', videoinput: 'gone-cam', audiooutput: 'gone-speaker'}"
    page.evaluate(f"localStorage.setItem('omni.devices', JSON.stringify({saved}))")
    page.reload()
    page.wait_for_function("window.omni && window.omni.health")
    page.click("#start")
    page.wait_for_function("window.omni.metrics.transport === 'webrtc'", timeout=20_000)
    page.wait_for_function("document.querySelector('#notice-text').textContent.includes('speaker')", timeout=5_000)
    notice = page.inner_text("#notice-text")
    for name in ("microphone", "camera", "speaker"):
        assert f"saved {name} is not available" in notice, notice
    assert page.evaluate("localStorage.getItem('omni.devices')") == "{}"
    for sel in ("#mic-select", "#cam-select", "#speaker-select"):
        assert page.input_value(sel) == "", sel  # the picker shows what is used: the default
    assert not page.is_visible("#error"), page.inner_text("#error-text")
    wait_turn(page)  # the call works on the defaults: a reply is heard
    page.click("#notice-close")
    assert not page.is_visible("#notice")
    assert page.is_visible("#preview") and not page.is_visible("#no-video")
    page.click("#hangup")
    assert page.is_visible("#no-video") and not page.is_visible("#preview")  # "camera off", not a black box
    assert page.inner_text("#no-video") == "camera off"


def test_speaking_from_events_when_web_audio_hears_nothing(server_factory, browser_factory):
    """The reply's level reads as silence: the badge still says speaking while the reply plays
    (from its first spoken text for its audio_ms), then listening; the turn's latency is shown."""
    server = server_factory(max_reply_tokens=40)
    page = open_page(browser_factory("one_turn.wav"), server, "auto", init_script=DEAF_ANALYSERS)
    page.evaluate(BADGE_LOG)
    page.click("#start")
    page.wait_for_function("window.omni.metrics.transport === 'webrtc'", timeout=20_000)
    turn = wait_turn(page)
    page.wait_for_function(f"{BADGE} === 'listening' && __badges.some(([b]) => b === 'speaking')", timeout=30_000)
    badges = page.evaluate("__badges")
    start = next(t for b, t in badges if b == "speaking")
    end = next(t for b, t in badges if t > start and b != "speaking")
    audio_ms = turn["server"]["audio_ms"]
    assert audio_ms > 0 and audio_ms - 100 <= end - start <= audio_ms + 1500, (end - start, audio_ms)
    assert metrics(page)["outRmsMax"] == 0  # the page never read the reply's level
    assert page.inner_text("#st-page").endswith(" ms")


def test_interrupt_works_when_web_audio_hears_nothing(server_factory, browser_factory):
    server = server_factory(max_reply_tokens=300, max_speech_s=60.0)
    hold_reply_until_cancelled(server)
    page = open_page(browser_factory("one_turn.wav"), server, "auto", init_script=DEAF_ANALYSERS)
    page.click("#start")
    page.wait_for_function(f"{BADGE} === 'speaking'", timeout=90_000)
    assert page.is_enabled("#interrupt")
    page.click("#interrupt")
    assert page.evaluate(BADGE) == "listening" and page.is_disabled("#interrupt")
    page.wait_for_function("window.omni.metrics.turns.some((t) => t.status === 'cancelled')", timeout=10_000)


def test_background_pauses_the_call_and_it_comes_back(server_factory, browser_factory):
    """Hidden while a reply plays: paused (the reply cancelled, the mic silent); visible: back.
    The AudioContext interrupted (Safari's state) with resume() refused outside a tap: one tap."""
    server = server_factory(max_reply_tokens=300, max_speech_s=60.0)
    hold_reply_until_cancelled(server)
    page = open_page(browser_factory("one_turn.wav"), server, "auto")
    page.click("#start")
    page.wait_for_function(f"{BADGE} === 'speaking'", timeout=90_000)
    assert mic_enabled(page)
    page.evaluate(VISIBILITY_JS, "hidden")
    assert page.evaluate(BADGE) == "paused" and page.inner_text("#state") == "paused"
    assert not mic_enabled(page)
    page.wait_for_function("window.omni.metrics.turns.some((t) => t.status === 'cancelled')", timeout=10_000)
    page.evaluate(VISIBILITY_JS, "visible")
    page.wait_for_function(f"{BADGE} === 'listening'", timeout=5_000)
    assert mic_enabled(page) and not page.is_visible("#resume")
    page.evaluate(
        """() => { const c = window.omni.ctx;
        Object.defineProperty(c, "state", { configurable: true, get: () => "interrupted" });
        c.resume = () => new Promise(() => {});
        c.dispatchEvent(new Event("statechange")); }"""
    )
    assert page.evaluate(BADGE) == "paused"
    page.wait_for_selector("#resume", state="visible", timeout=5_000)
    assert not page.is_visible("#start")  # Resume in its place
    page.evaluate("() => { delete window.omni.ctx.state; delete window.omni.ctx.resume; }")  # the tap may resume
    page.click("#resume")
    page.wait_for_function(f"{BADGE} === 'listening'", timeout=5_000)
    assert mic_enabled(page) and not page.is_visible("#resume")
    assert page.evaluate("window.omni.metrics.transport") == "webrtc" and not page.is_visible("#error")
