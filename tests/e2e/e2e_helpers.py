"""Page helpers shared by the browser E2E tests (fixtures live in conftest.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SPEECH = Path(__file__).resolve().parents[1] / "assets" / "speech"
TURN_TIMEOUT_MS = 90_000


def metrics(page) -> dict:
    """A JSON copy of `window.omni.metrics` (turns, truncates, transport, event counts...)."""
    return page.evaluate("JSON.parse(JSON.stringify(window.omni.metrics))")


def open_page(browser, server, transport: str, viewport=(1280, 800)):
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    page.on("pageerror", lambda e: pytest.fail(f"page error: {e}"))
    page.goto(server.url)
    page.wait_for_function("window.omni && window.omni.health")
    if transport == "websocket":
        page.check('input[name="transport"][value="websocket"]')
    return page


def wait_turn(page, timeout=TURN_TIMEOUT_MS) -> dict:
    """Until one reply has been heard at the page and finished at the server."""
    page.wait_for_function("window.omni.metrics.turns.some(t => t.pageMs != null && t.server)", timeout=timeout)
    return next(t for t in metrics(page)["turns"] if t.get("pageMs") is not None and t.get("server"))


def full_turn(page, transport: str) -> dict:
    """Start, speak (the fake mic), and check what a person sees of one complete turn."""
    page.click("#start")
    page.wait_for_function(f"window.omni.metrics.transport === '{transport}'", timeout=20_000)
    turn = wait_turn(page)
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
    print(
        f"\n[{transport}] end of speech -> first audio at the page: {turn['pageMs']:.0f} ms; "
        f"server first_audio_ms {turn['server']['first_audio_ms']}; "
        f"unit prefill mean {turn['server'].get('unit_prefill_mean_ms')} ms; out RMS max {m['outRmsMax']:.3f}"
    )
    return turn
