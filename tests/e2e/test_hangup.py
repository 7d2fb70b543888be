"""Browser E2E: a Chromium page that closes mid-call (tab closed, nothing said) frees its WebRTC
session slot within seconds (its microphone goes silent), not after the ICE consent timeout."""

from __future__ import annotations

import time

from e2e_helpers import open_page


def test_a_closed_page_frees_its_webrtc_slot_at_once(server_factory, browser_factory):
    server = server_factory(max_reply_tokens=20)
    browser = browser_factory("one_turn.wav", loop=True)
    page = open_page(browser, server, "auto")
    page.click("#start")
    page.wait_for_function("window.omni.metrics.transport === 'webrtc'", timeout=20_000)
    assert server.call(lambda: server.app["manager"].in_use) == 1
    t = time.monotonic()
    page.close()  # the tab goes away: Chromium hangs up
    while server.call(lambda: server.app["manager"].in_use) and time.monotonic() - t < 30:
        time.sleep(0.05)
    freed_s = time.monotonic() - t
    print(f"slot freed {freed_s:.2f} s after the page closed")
    assert server.call(lambda: server.app["manager"].in_use) == 0 and freed_s < 8.0, (
        freed_s
    )  # MIC_SILENCE_S (MIC_FIRST_S if no packet came yet) + teardown
