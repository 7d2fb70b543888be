"""Browser E2E: the page on a MiniCPM-V 4.5 server (the tiny `embedded:minicpmv-4_5`). It reads the
family from /healthz and becomes camera + text: the microphone off and the page saying why, the
text box the input, replies streamed as text, a frame-rate setting whose effect the server reports
(omni.video.stats), replies read aloud only when asked; it never sends an audio event (the server
refuses them for this family). The o-2.6 page keeps its voice controls and shows none of this."""

from __future__ import annotations

import asyncio
import re

import pytest
from e2e_helpers import IPAD_SIZES, LONG_CONVERSATION_JS, check_layout, layout_js, metrics, open_page

# What the page sends and asks the browser for, recorded before its own scripts run: the events
# on either transport (frames reduced to their capture time), the media it opens, and what it
# asks speechSynthesis to say (recorded, not spoken: a headless browser has no voices).
SPY_JS = """(() => {
  const spy = window.__spy = { sent: [], media: [], spoken: [] };
  const record = (data) => {
    try {
      const e = JSON.parse(data);
      spy.sent.push(e.type === "input_image_buffer.append" ? { type: e.type, captured_ms: e.captured_ms } : e);
    } catch { /* not JSON */ }
  };
  for (const C of [WebSocket, RTCDataChannel]) {
    const send = C.prototype.send;
    C.prototype.send = function (data) { record(data); return send.call(this, data); };
  }
  const gum = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = (c) => { spy.media.push(Object.keys(c).filter((k) => c[k])); return gum(c); };
  speechSynthesis.speak = (u) => { spy.spoken.push(u.text); };
})()"""
REPLY_TOKENS = 40  # a few seconds of the tiny model's text: streamed in many pieces
AUDIO_EVENTS = re.compile(r"^(input_audio_buffer\.|conversation\.item\.truncate$)")


def open_v45(browser, server, transport: str):
    """The page with the spy, and the console errors it logs (a list the test checks at its end)."""
    page = open_page(browser, server, transport, init_script=SPY_JS)
    errors: list[str] = []
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.wait_for_function("window.omni.family === 'v-4.5'")
    return page, errors


def sent(page) -> list[dict]:
    return page.evaluate("window.__spy.sent")


def ask(page, question: str, done_before: int) -> str:
    """Type a question, wait for its reply to finish; the reply's text as the page shows it."""
    page.fill("#text-input", question)
    page.press("#text-input", "Enter")
    assert page.input_value("#text-input") == ""
    assert page.locator(".transcript li.user .text").last.inner_text() == question
    page.wait_for_function(f"(window.omni.metrics.events['response.done'] || 0) > {done_before}", timeout=60_000)
    return page.locator(".transcript li.assistant .text").last.inner_text()


def ask_for_text(page, question: str, tries: int = 3) -> str:
    """`ask` until a reply has text: the random tiny model may end one at its first token."""
    for _ in range(tries):
        done = metrics(page)["events"].get("response.done", 0)
        reply = ask(page, question, done)
        if reply.strip():
            return reply
    pytest.fail(f"{tries} replies without text")


def check_no_audio_sent(page) -> None:
    events = sent(page)
    audio = [e["type"] for e in events if AUDIO_EVENTS.match(e["type"])]
    assert not audio, audio
    updates = [e["session"] for e in events if e["type"] == "session.update"]
    assert updates and all("audio" not in s and s["output_modalities"] == ["text"] for s in updates), updates
    assert page.evaluate("window.__spy.media") == [["video"]]  # the camera only, never the microphone
    assert page.evaluate("window.omni.metrics.events.error") is None, metrics(page)["events"]


@pytest.mark.parametrize("transport", ["websocket", "webrtc"])
def test_v45_page_is_camera_and_text_and_streams_typed_replies(v45_server_factory, browser_factory, transport):
    server = v45_server_factory(max_reply_tokens=REPLY_TOKENS)
    page, errors = open_v45(
        browser_factory("one_turn.wav"), server, "websocket" if transport == "websocket" else "auto"
    )
    # the mode before any call: the mic off and why, the voice controls gone, the frame rate offered
    assert page.get_attribute("body", "data-family") == "v-4.5"
    assert page.is_visible("#mic-off")
    assert "MiniCPM-V 4.5 hears no audio" in page.inner_text("#mic-off"), page.inner_text("#mic-off")
    for hidden in (
        "#mute",
        "#mic-level",
        "#mode-settings",
        "#voice",
        "#set-vad-threshold",
        "#set-text-only",
        "#dl-audio",
    ):
        assert not page.is_visible(hidden), hidden
    assert page.is_visible("#set-video-fps") and page.input_value("#set-video-fps") == "2"
    assert page.is_visible("#set-read-aloud") and not page.is_checked("#set-read-aloud")  # off by default
    assert "MiniCPM-V 4.5" in page.inner_text("#banner")
    assert page.get_attribute("#text-input", "placeholder").startswith("Ask about the camera")

    page.click("#start")
    page.wait_for_function(f"window.omni.metrics.transport === '{transport}'", timeout=20_000)
    session = page.evaluate("window.omni.session")
    assert session["output_modalities"] == ["text"] and session["omni"]["video_fps"] == 2, session
    assert page.evaluate("window.omni.mic") is None and page.evaluate("!!window.omni.cam")
    assert page.inner_text("#state") == "watching"
    page.click("h1")  # the page, not a field, has the keys
    page.keyboard.press("m")
    assert page.evaluate("window.omni.state.muted") is False  # no microphone: nothing to mute
    wait_stats(page, "st.frames_total >= 2")  # the question is about frames the model has seen

    reply = ask_for_text(page, "What do you see?")
    m = metrics(page)
    assert m["events"].get("response.output_text.delta", 0) >= 2, m["events"]  # streamed, piece by piece
    assert "response.output_audio.delta" not in m["events"]
    assert page.locator(".transcript li.assistant .meta").last.inner_text() in ("", "incomplete")
    page.wait_for_function("document.querySelector('#state').dataset.state === 'listening'", timeout=5_000)
    assert page.evaluate("window.__spy.spoken") == []  # not read aloud unless asked

    # read aloud on: the browser's speech synthesis is asked to say the whole reply, sentence by sentence
    page.check("#set-read-aloud")
    reply = ask_for_text(page, "And now?")
    spoken = page.evaluate("window.__spy.spoken")
    assert spoken and " ".join(" ".join(spoken).split()) == " ".join(reply.split()), (spoken, reply)

    check_no_audio_sent(page)
    if transport == "websocket":  # over WebRTC the frames are the video track
        stamps = [e["captured_ms"] for e in sent(page) if e["type"] == "input_image_buffer.append"]
        assert len(stamps) >= 2 and all(isinstance(t, int) for t in stamps) and stamps == sorted(stamps), stamps[:20]
    assert not page.is_visible("#error"), page.inner_text("#error-text")
    assert not errors, errors
    print(f"\n[v-4.5 {transport}] {m['events']['response.output_text.delta']} text deltas; reply {reply[:60]!r}")


def wait_stats(page, test: str, timeout_ms: int = 20_000) -> dict:
    """Until the latest omni.video.stats passes `test` (JS on `st`); then that report."""
    page.wait_for_function(
        f"(() => {{ const st = window.omni.metrics.videoStats; return !!st && ({test}); }})()", timeout=timeout_ms
    )
    return metrics(page)["videoStats"]


@pytest.mark.parametrize("transport", ["websocket", "webrtc"])
def test_v45_frame_rate_setting_changes_what_reaches_the_model(v45_server_factory, browser_factory, transport):
    server = v45_server_factory()
    page, errors = open_v45(
        browser_factory("one_turn.wav"), server, "websocket" if transport == "websocket" else "auto"
    )
    page.select_option("#set-video-fps", "1")
    page.click("#start")
    page.wait_for_function(f"window.omni.metrics.transport === '{transport}'", timeout=20_000)
    assert page.evaluate("window.omni.session.omni.video_fps") == 1
    slow = wait_stats(page, "st.frames_total >= 3")
    # the server's fps counts the frames over its last 2 s: a frame more or less is +-0.5 fps
    assert 0 < slow["fps"] <= 2.0, slow
    assert re.fullmatch(r"[\d.]+ fps reach the model \(\d+ frames? in \d+ packs?\)", page.inner_text("#st-frames"))

    page.select_option("#set-video-fps", "5")  # applied at once, during the call
    page.wait_for_function("window.omni.session.omni.video_fps === 5", timeout=10_000)
    fast = wait_stats(page, f"st.fps >= 3.5 && st.frames_total > {slow['frames_total']}")
    assert fast["fps"] <= 6.5 and fast["packs_total"] >= slow["packs_total"], (slow, fast)
    assert f"{round(fast['fps'] * 10) / 10:g} fps reach the model" in page.inner_text("#st-frames")
    assert page.evaluate("localStorage.getItem('omni.settings')").count('"videoFps":5') == 1  # kept for next time
    check_no_audio_sent(page)
    assert not errors, errors
    print(f"\n[v-4.5 {transport}] 1 fps setting: {slow}; 5 fps setting: {fast}")


def test_v45_thinking_shows_the_reasoning_folded_apart_from_the_reply(v45_server_factory, browser_factory):
    server = v45_server_factory(max_reply_tokens=REPLY_TOKENS)
    page, errors = open_v45(browser_factory("one_turn.wav"), server, "websocket")
    assert not page.is_checked("#set-thinking")  # off by default
    page.check("#set-thinking")
    page.click("#start")
    page.wait_for_function("window.omni.metrics.transport === 'websocket'", timeout=20_000)
    assert page.evaluate("window.omni.session.omni.thinking") is True
    for tries in range(3):  # the random tiny model may close its thinking at once
        ask(page, "Why is the sky blue?", tries)
        m = metrics(page)
        if m["events"].get("response.reasoning_text.delta", 0):
            break
    assert m["events"].get("response.reasoning_text.delta", 0) > 0, m["events"]
    bubble = page.locator(".transcript li.assistant").last
    reasoning = bubble.locator(".reasoning span").text_content()  # folded: not rendered
    assert reasoning.strip(), "no reasoning shown"
    assert not bubble.locator(".reasoning").evaluate("d => d.open")  # folded until asked for
    done = next(e for e in page.evaluate("window.__spy.sent") if e["type"] == "session.update")
    assert done["session"]["omni"]["thinking"] is True
    check_no_audio_sent(page)
    assert not errors, errors
    print(
        f"\n[v-4.5 thinking] {m['events']['response.reasoning_text.delta']} reasoning deltas, "
        f"{m['events'].get('response.output_text.delta', 0)} text deltas"
    )


def hold_first_reply_until_cancelled(server) -> None:
    """Forced fault: once the first reply has streamed a piece, its next step (a piece or its end)
    waits for that reply's cancel, so the random tiny model cannot end it before the user cuts in."""
    from streaming.engines.handle import EngineHandle

    step, held = EngineHandle.reply_step, {"pieces": 0, "released": False}

    async def gated(self, *args, **kw):
        item = await step(self, *args, **kw)
        if not held["released"]:
            if held["pieces"]:
                for _ in range(600):  # at most 30 s
                    if all(r.closed for r in held["first"]):
                        break
                    await asyncio.sleep(0.05)
                held["released"] = True
            elif item and item[0]:  # the first piece: of the reply live now
                held["pieces"] = 1
                held["first"] = [c.responder.current for c in server.app["conversations"] if c.responder.current]
        return item

    server.call(lambda: setattr(EngineHandle, "reply_step", gated))
    server.undo.append(lambda: setattr(EngineHandle, "reply_step", step))


def test_v45_a_new_question_cuts_the_reply_being_written(v45_server_factory, browser_factory):
    """Barge-in by typing: the reply being streamed is cancelled and shown as interrupted, the new
    question is answered, and nothing about audio (no conversation.item.truncate) is sent."""
    server = v45_server_factory(max_reply_tokens=REPLY_TOKENS)
    hold_first_reply_until_cancelled(server)
    page, errors = open_v45(browser_factory("one_turn.wav"), server, "websocket")
    page.click("#start")
    page.wait_for_function("window.omni.metrics.transport === 'websocket'", timeout=20_000)
    page.fill("#text-input", "Describe everything you see, slowly.")
    page.press("#text-input", "Enter")
    page.wait_for_function("window.omni.metrics.events['response.output_text.delta'] > 0", timeout=30_000)
    page.fill("#text-input", "Stop: what colour is it?")
    page.press("#text-input", "Enter")
    page.wait_for_function("(window.omni.metrics.events['response.done'] || 0) >= 2", timeout=60_000)
    statuses = [t["status"] for t in metrics(page)["turns"]]
    assert statuses[0] == "cancelled" and statuses[1] in ("completed", "incomplete"), statuses
    first = page.locator(".transcript li.assistant").first
    assert "cancelled" in first.get_attribute("class") and first.locator(".meta").inner_text() == "interrupted"
    cancels = [e for e in sent(page) if e["type"] == "response.cancel"]
    assert len(cancels) == 1, cancels
    check_no_audio_sent(page)
    assert not errors, errors


def test_o26_page_keeps_its_voice_controls_and_shows_no_camera_text_mode(server_factory, browser_factory):
    server = server_factory(max_reply_tokens=40)
    page = open_page(browser_factory("one_turn.wav"), server, "websocket")
    page.wait_for_function("window.omni.family === 'o-2.6'")
    for shown in ("#mute", "#mic-level", "#mode-settings", "#voice", "#set-vad-threshold", "#dl-audio", "#st-page"):
        assert page.is_visible(shown), shown
    for hidden in ("#mic-off", "#set-video-fps", "#set-read-aloud", "#set-thinking", "#st-frames"):
        assert not page.is_visible(hidden), hidden
    assert "MiniCPM-o 2.6" in page.inner_text("#banner")


# camera + text: no Mute; the microphone-off line is in view with the call's controls
V45_IN_VIEW = ("#start", "#interrupt", "#hangup", "#state", "#mic-off", "#transcript", "#text-input", "#send-text")
SIZES = {
    "desktop-1280x800": (1280, 800),
    **{f"ipad-{k}": v for k, v in IPAD_SIZES.items()},
    "phone-390x844": (390, 844),
}


def test_v45_layout_desktop_ipad_phone(v45_server_factory, browser_factory, shots_dir):
    server = v45_server_factory(max_reply_tokens=REPLY_TOKENS)
    page, errors = open_v45(browser_factory("one_turn.wav"), server, "websocket")
    page.click("#start")
    page.wait_for_function("window.omni.metrics.transport === 'websocket'", timeout=20_000)
    ask(page, "What do you see?", 0)
    page.evaluate(LONG_CONVERSATION_JS)  # the transcript at its tallest
    assert not page.is_visible("#error"), page.inner_text("#error-text")
    for name, (w, h) in SIZES.items():
        page.set_viewport_size({"width": w, "height": h})
        page.wait_for_timeout(150)
        facts = page.evaluate(layout_js(V45_IN_VIEW))
        page.screenshot(path=str(shots_dir / f"v45-{name}.png"))
        check_layout(facts, f"v-4.5 {name}", w, h, one_row=not name.startswith("phone"))
    assert not errors, errors
