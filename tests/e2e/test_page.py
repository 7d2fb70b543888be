"""Browser E2E of the page's own features: the user's transcript and typed messages, Interrupt
from the keyboard returning the badge to listening at once, the mic meter on both transports, a
dead server noticed within 5 s (forced fault: the server's loop frozen) and a failed reconnect
explained in plain words."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from e2e_helpers import metrics, open_page, wait_turn
from test_features import hold_reply_until_cancelled


@pytest.fixture(scope="module")
def silence_wav(tmp_path_factory) -> str:
    """A microphone that hears nothing: only typed messages make turns."""
    path = tmp_path_factory.mktemp("mic") / "silence.wav"
    sf.write(str(path), np.zeros(48_000 * 5, np.int16), 48_000, subtype="PCM_16")
    return str(path)


def state(page) -> str:
    return page.get_attribute("#state", "data-state")


def test_spoken_turn_shows_my_transcript_then_a_typed_message_is_answered(server_factory, browser_factory):
    server = server_factory(max_reply_tokens=40)
    page = open_page(browser_factory("one_turn.wav"), server, "websocket")
    failed = []
    page.on("response", lambda r: r.status >= 400 and failed.append((r.status, r.url)))
    page.reload()  # count every request, favicon included
    page.wait_for_function("window.omni && window.omni.health")
    page.check('input[name="transport"][value="websocket"]')
    assert page.is_disabled("#text-input")  # no call yet
    page.click("#start")
    page.wait_for_function("window.omni.metrics.transport === 'websocket'", timeout=20_000)
    wait_turn(page)
    # the user's own words replace the placeholder once the server's transcript is done
    page.wait_for_function(
        "window.omni.metrics.events['conversation.item.input_audio_transcription.completed'] > 0", timeout=60_000
    )
    spoken = page.locator(".transcript li.user .text").first.inner_text()
    assert spoken.strip() and spoken != "…", spoken
    heard = len(metrics(page)["turns"])
    page.fill("#text-input", "What do you see?")
    page.press("#text-input", "Enter")
    assert page.input_value("#text-input") == ""
    assert page.locator(".transcript li.user .text").last.inner_text() == "What do you see?"
    page.wait_for_function(
        f"window.omni.metrics.turns.filter(t => t.pageMs != null && t.server).length > {heard}", timeout=60_000
    )  # answered, with speech heard at the page
    assert not page.is_visible("#error"), page.inner_text("#error-text")
    assert not failed, failed
    # the latency history, the event log and the downloads
    assert page.locator("#latency-chart rect").count() == 2
    page.wait_for_function("window.omni.metrics.events['response.done'] >= 2", timeout=60_000)
    page.click("#event-log summary")
    log = page.inner_text("#log-list")
    for line in (
        "← session.created",
        "→ session.update",
        "→ conversation.item.create What do you see?",
        "→ response.create",
        "← response.output_audio.delta ×",
    ):
        assert line in log, (line, log[:2000])
    # a sampled reply may reach max_reply_tokens (incomplete); it is never cancelled or failed
    done = re.findall(r"← response\.done (\w+)", log)
    assert len(done) == 2 and set(done) <= {"completed", "incomplete"}, (done, log[-2000:])
    with page.expect_download() as d:
        page.click("#dl-transcript")
    doc = json.loads(Path(d.value.path()).read_text())
    roles = [t["role"] for t in doc["turns"]]
    assert roles.count("user") == 2 and roles.count("assistant") >= 2, doc
    assert doc["turns"][roles.index("user", 1)]["text"] == "What do you see?" and len(doc["first_audio_ms"]) == 2
    with page.expect_download() as d:
        page.click("#dl-audio")
    audio, rate = sf.read(d.value.path(), dtype="float32")
    assert rate in (44_100, 48_000) and len(audio) > 3 * rate, (rate, len(audio))
    assert np.sqrt(np.mean(audio**2)) > 1e-3  # the replies, not only silence


def test_space_interrupts_and_the_badge_says_listening_at_once(server_factory, browser_factory):
    server = server_factory(max_reply_tokens=300, max_speech_s=60.0)
    hold_reply_until_cancelled(server)
    page = open_page(browser_factory("one_turn.wav"), server, "websocket")
    page.click("#start")
    page.wait_for_function("document.querySelector('#state').dataset.state === 'speaking'", timeout=90_000)
    page.click("h1")  # focus on the page, not a field
    page.keyboard.press("Space")
    page.wait_for_function("document.querySelector('#state').dataset.state === 'listening'", timeout=300)
    assert page.is_disabled("#interrupt")
    page.wait_for_function("window.omni.metrics.truncates.length > 0", timeout=5_000)
    page.wait_for_timeout(1_500)  # and it stays so: no late "speaking"
    assert state(page) == "listening"


@pytest.mark.parametrize("transport", ["websocket", "webrtc"])
def test_the_mic_meter_moves_on_both_transports(server_factory, browser_factory, transport):
    server = server_factory(max_reply_tokens=40)
    page = open_page(
        browser_factory("one_turn.wav", loop=True), server, "websocket" if transport == "websocket" else "auto"
    )
    page.click("#start")
    page.wait_for_function(f"window.omni.metrics.transport === '{transport}'", timeout=20_000)
    page.wait_for_function("document.querySelector('#mic-level').value > 0.02", timeout=20_000)


def test_a_dead_server_is_noticed_within_5_s_and_a_failed_reconnect_is_explained(
    server_factory, browser_factory, silence_wav
):
    server = server_factory()
    page = open_page(browser_factory(silence_wav, loop=True), server, "websocket")
    page.click("#start")
    page.wait_for_function("window.omni.metrics.transport === 'websocket'", timeout=20_000)
    page.wait_for_function("window.omni.metrics.events['omni.heartbeat'] >= 2", timeout=10_000)
    assert not page.is_visible("#error")  # a quiet session is not a dead one
    frozen = threading.Thread(target=lambda: server.loop.call_soon_threadsafe(time.sleep, 9.0))
    t0 = time.monotonic()
    frozen.start()  # forced fault: no event, no close frame
    page.wait_for_selector("#error:not([hidden])", timeout=8_000)
    noticed_s = time.monotonic() - t0
    text = page.inner_text("#error-text")
    assert "nothing heard from the server for 5 s" in text and page.is_visible("#reconnect"), text
    assert noticed_s < 7.0, noticed_s
    print(f"\n[dead server] noticed after {noticed_s:.1f} s")
    time.sleep(max(0.0, 9.5 - (time.monotonic() - t0)))
    server.stop()  # now it is really gone
    page.click("#reconnect")
    page.wait_for_function(
        "document.querySelector('#error-text').textContent.includes('Could not reach the server')", timeout=20_000
    )
    assert page.is_visible("#reconnect")
    assert "1006" not in page.inner_text("#error-text")


def test_settings_are_kept_in_the_browser_and_reach_the_session(server_factory, browser_factory, silence_wav):
    server = server_factory(max_reply_tokens=40)
    page = open_page(browser_factory(silence_wav, loop=True), server, "websocket")
    page.fill("#set-instructions", "You are a pirate.")
    page.fill("#set-temperature", "0.3")
    page.fill("#set-seed", "7")
    page.fill("#set-vad-threshold", "0.7")
    page.fill("#set-vad-silence", "900")
    page.check("#set-text-only")
    page.dispatch_event("#set-vad-silence", "change")
    page.reload()  # kept in localStorage
    page.wait_for_function("window.omni && window.omni.health")
    page.check('input[name="transport"][value="websocket"]')
    assert page.input_value("#set-instructions") == "You are a pirate." and page.is_checked("#set-text-only")
    page.click("#start")
    page.wait_for_function("window.omni.session?.instructions === 'You are a pirate.'", timeout=20_000)

    def config():
        (c,) = server.app["conversations"]
        return c.config

    c = server.call(config)
    assert (c.temperature, c.omni.seed, c.output_modalities) == (0.3, 7, ("text",)), c
    assert (c.turn_detection.threshold, c.turn_detection.silence_duration_ms) == (0.7, 900), c.turn_detection
    assert c.transcription is not None
    page.fill("#set-instructions", "You are a poet.")  # applied during the call
    page.dispatch_event("#set-instructions", "change")
    page.wait_for_function("window.omni.session?.instructions === 'You are a poet.'", timeout=10_000)
    page.fill("#text-input", "Hello")  # a text-only reply shows as text
    page.press("#text-input", "Enter")
    page.wait_for_function("window.omni.metrics.events['response.output_text.delta'] > 0", timeout=30_000)
    page.wait_for_function("window.omni.metrics.events['response.done'] > 0", timeout=30_000)
    assert not page.locator(".transcript li.assistant").last.inner_text().strip() == ""
    assert not page.is_visible("#error"), page.inner_text("#error-text")


def test_devices_are_listed_chosen_for_the_next_call_and_the_camera_flips(server_factory, browser_factory):
    server = server_factory(max_reply_tokens=40)
    page = open_page(browser_factory("one_turn.wav", loop=True), server, "auto")
    page.click("#start")
    page.wait_for_function("window.omni.metrics.transport === 'webrtc'", timeout=20_000)
    page.wait_for_function("document.querySelectorAll('#mic-select option').length >= 2", timeout=10_000)
    mics = page.eval_on_selector_all("#mic-select option", "os => os.map(o => [o.value, o.textContent])")
    cams = page.eval_on_selector_all("#cam-select option", "os => os.map(o => [o.value, o.textContent])")
    assert mics[0][0] == "" and all(label for _, label in mics[1:]) and len(cams) >= 2, (mics, cams)
    mic = mics[-1][0]
    page.select_option("#mic-select", mic)
    assert page.evaluate("JSON.parse(localStorage.getItem('omni.devices')).audioinput") == mic
    before = page.evaluate("window.omni.cam.getVideoTracks()[0].id")
    page.click("#flip")  # a new camera track, sent in place of the old
    page.wait_for_function(f"window.omni.cam.getVideoTracks()[0].id !== '{before}'", timeout=10_000)
    assert page.evaluate("window.omni.devices.facing") == "environment"
    assert not page.evaluate("document.querySelector('#preview').classList.contains('mirrored')")
    sent = page.evaluate("window.omni.transport.videoSender.track.id")
    assert sent == page.evaluate("window.omni.cam.getVideoTracks()[0].id")
    first_call = page.evaluate("window.omni.callStarted")
    page.click("#hangup")
    page.click("#start")  # the next call uses the chosen microphone
    page.wait_for_function(
        f"window.omni.callStarted !== '{first_call}' && window.omni.mic && window.omni.metrics.transport === 'webrtc'",
        timeout=20_000,
    )
    assert page.evaluate("window.omni.mic.getAudioTracks()[0].getSettings().deviceId") == mic
    assert not page.is_visible("#error"), page.inner_text("#error-text")
