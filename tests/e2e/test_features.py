"""Browser E2E: barge-in, a cloned voice, errors a person must see, and layout screenshots."""

from __future__ import annotations

import asyncio

import pytest
from e2e_helpers import (
    IPAD_SIZES,
    LAYOUT_JS,
    LONG_CONVERSATION_JS,
    SPEECH,
    check_layout,
    full_turn,
    metrics,
    open_page,
    wait_turn,
)

SIZES = {
    "desktop-1280x800": (1280, 800),
    **{f"ipad-{k}": v for k, v in IPAD_SIZES.items()},
    "phone-390x844": (390, 844),
}


def hold_reply_until_cancelled(server, audio_items: int = 14) -> None:
    """Forced fault: replies never end by themselves (the official `force_no_stop` debug flag), and
    once the first reply has made a few seconds of speech its next step waits until the reply is
    cancelled, so the random tiny model cannot end it before the user cuts in."""
    import dataclasses
    import streaming.session.respond as respond_mod

    real = respond_mod.GenerateOptions
    respond_mod.GenerateOptions = lambda **kw: dataclasses.replace(real(**kw), force_no_stop=True)
    server.undo.append(lambda: setattr(respond_mod, "GenerateOptions", real))
    from streaming.engines.handle import EngineHandle

    step, held = EngineHandle.reply_step, [0]

    async def gated(self, *args, **kw):
        item = await step(self, *args, **kw)
        if item is not None and len(item[1]) and held[0] < audio_items:
            held[0] += 1
            if held[0] == audio_items:
                for _ in range(600):  # at most 30 s
                    if all(c.responder.current is None for c in server.app["conversations"]):
                        break
                    await asyncio.sleep(0.05)
        return item

    server.call(lambda: setattr(EngineHandle, "reply_step", gated))
    server.undo.append(lambda: setattr(EngineHandle, "reply_step", step))


def test_barge_in_stops_old_audio_and_starts_new_turn(server_factory, browser_factory):
    """Two utterances 2 s apart; the tiny model's long reply is still playing when the second one
    starts: the page drops that reply's queued audio at once, reports what was played with
    conversation.item.truncate, and the second turn gets its own reply."""
    server = server_factory(max_reply_tokens=300, max_speech_s=60.0)
    hold_reply_until_cancelled(server)
    page = open_page(browser_factory("two_turns.wav"), server, "websocket")
    page.click("#start")
    page.wait_for_function("window.omni.metrics.truncates.length > 0", timeout=90_000)
    page.wait_for_function("window.omni.metrics.events['conversation.item.truncated'] > 0", timeout=10_000)
    # the reply to the second utterance is heard
    page.wait_for_function(
        """(() => { const m = window.omni.metrics, cut = m.truncates[0].id;
        return m.turns.some(t => t.id !== cut && t.pageMs != null); })()""",
        timeout=90_000,
    )
    m = metrics(page)
    cut = m["truncates"][0]
    dropped = page.evaluate(
        """(id) => { const r = window.omni.responses.get(id);
        return {played: r.played, received: r.received}; }""",
        cut["id"],
    )
    page.wait_for_timeout(500)
    later = page.evaluate("(id) => window.omni.responses.get(id).played", cut["id"])
    assert later == dropped["played"], "the dropped reply kept playing"
    assert 0 < cut["audio_end_ms"] <= dropped["received"] * 1000 / 24000, (cut, dropped)
    assert len(page.locator(".transcript li.user").all()) >= 2
    assert page.locator(".transcript li.assistant.cancelled").count() >= 1  # shown as interrupted
    print(f"\n[barge-in] truncate audio_end_ms={cut['audio_end_ms']} of {dropped['received'] / 24:.0f} ms received")


@pytest.mark.parametrize("transport", ["websocket", "webrtc"])
def test_cloned_voice_from_uploaded_clip_reaches_server(server_factory, browser_factory, transport):
    """On WebRTC the 530 KB session.update is over the data channel's 64 KiB: it goes in pieces."""
    clip = SPEECH / "voice_ref.wav"
    server = server_factory(max_reply_tokens=40)
    page = open_page(browser_factory("one_turn.wav"), server, "websocket" if transport == "websocket" else "auto")
    page.set_input_files("#voice-file", str(clip))
    page.wait_for_function("document.querySelector('input[value=upload]').checked")
    assert "voice_ref.wav" in page.inner_text("#voice-file-info")
    page.click("#start")
    page.wait_for_function(f"window.omni.metrics.transport === '{transport}'", timeout=20_000)
    page.wait_for_function("window.omni.session?.audio?.output?.omni_reference_audio", timeout=20_000)
    echo = page.evaluate("window.omni.session.audio.output.omni_reference_audio")
    assert echo["format"] == "wav" and echo["size_bytes"] == clip.stat().st_size, echo
    refs = server.call(
        lambda: [None if c.state.ref_16k is None else len(c.state.ref_16k) for c in server.app["conversations"]]
    )
    assert any(n and 7.5 * 16000 < n < 9.0 * 16000 for n in refs), refs  # the 8.3 s clip, at 16 kHz
    wait_turn(page)  # and a reply is made with it
    assert not page.is_visible("#error"), page.inner_text("#error-text")


def test_api_key_is_asked_for_and_sent(server_factory, browser_factory):
    server = server_factory(api_key="sesame", max_reply_tokens=40)
    page = open_page(browser_factory("one_turn.wav"), server, "websocket")
    assert page.is_visible("#key-box")
    page.click("#start")
    page.wait_for_selector("#error:not([hidden])")
    assert "needs an API key" in page.inner_text("#error-text")
    page.fill("#api-key", "open-barley")  # a wrong key is told apart from none
    page.dispatch_event("#api-key", "change")
    page.click("#start")
    page.wait_for_function(
        "document.querySelector('#error-text').textContent.includes('refused this API key')", timeout=20_000
    )
    page.fill("#api-key", "sesame")
    page.dispatch_event("#api-key", "change")
    assert page.evaluate("localStorage.getItem('omni.apiKey')") == "sesame"
    page.click("#start")
    page.wait_for_function("window.omni.metrics.transport === 'websocket'", timeout=20_000)


def test_server_full_is_explained(server_factory, browser_factory):
    server = server_factory(max_sessions=1, max_reply_tokens=40)
    browser = browser_factory("one_turn.wav")
    first = open_page(browser, server, "auto")
    first.click("#start")
    first.wait_for_function("window.omni.metrics.transport", timeout=20_000)
    second = open_page(browser, server, "auto")
    second.click("#start")
    second.wait_for_selector("#error:not([hidden])", timeout=20_000)
    assert "full" in second.inner_text("#error-text").lower()
    assert second.is_visible("#reconnect")


def test_screenshots_desktop_ipad_phone(server_factory, browser_factory, shots_dir):
    server = server_factory(max_reply_tokens=60)
    page = open_page(browser_factory("one_turn.wav"), server, "websocket")
    full_turn(page, "websocket")
    page.evaluate(LONG_CONVERSATION_JS)  # the transcript at its tallest
    for name, (w, h) in SIZES.items():
        page.set_viewport_size({"width": w, "height": h})
        page.wait_for_timeout(150)
        facts = page.evaluate(LAYOUT_JS)
        page.screenshot(path=str(shots_dir / f"{name}.png"))
        check_layout(facts, name, w, h, one_row=not name.startswith("phone"))
