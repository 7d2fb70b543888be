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


def open_page(browser, server, transport: str, viewport=(1280, 800), init_script: str | None = None):
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    page.on("pageerror", lambda e: pytest.fail(f"page error: {e}"))
    if init_script:  # runs before the page's own scripts (a forced fault, or a handle for the test)
        page.add_init_script(init_script)
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
    # heard: on WebRTC the turn counts from the reply's first spoken text, a little before its sound
    page.wait_for_function("window.omni.metrics.outRmsMax > 0.01", timeout=10_000)
    m = metrics(page)
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


# Tablet and phone layouts, measured the same way in Chromium and WebKit: run LAYOUT_JS in the
# page, then check_layout() its answer.
IPAD_SIZES = {"768x1024": (768, 1024), "834x1194": (834, 1194), "1024x768": (1024, 768), "1180x820": (1180, 820)}
MIN_TARGET_PX = 44  # Apple's minimum touch target
MIN_TEXT_BOX_PX = 260  # the placeholder "Type a message (Enter to send)" and a sentence's worth of words
IN_VIEW = ("#start", "#mute", "#interrupt", "#hangup", "#state", "#transcript", "#text-input", "#send-text")
_LAYOUT_JS = """(() => {
  document.activeElement?.blur();                           // nothing focused scrolls itself into view
  window.scrollTo(0, 0);
  const box = (el) => { const r = el.getBoundingClientRect(); return { x: r.x, y: r.y, w: r.width, h: r.height }; };
  const inView = {};
  for (const sel of %s) inView[sel] = box(document.querySelector(sel));
  const small = [];
  for (const el of document.querySelectorAll("button, select, input, textarea, summary")) {
    if (el.offsetParent === null) continue;                   // not shown
    // a radio or checkbox is tapped through its label
    const b = box(el.type === "radio" || el.type === "checkbox" ? el.closest("label") : el);
    if (b.h < %d - 0.5 || b.w < %d - 0.5) small.push(`${el.id || el.name || el.tagName} ${el.value || ""}: ${Math.round(b.w)}x${Math.round(b.h)}`);
  }
  const rows = new Set([...document.querySelectorAll(".controls button")].filter((b) => b.offsetParent !== null)
    .map((b) => Math.round(b.getBoundingClientRect().y)));
  return { overflow: document.documentElement.scrollWidth - innerWidth, inView, small, controlRows: rows.size,
    textBox: box(document.querySelector("#text-input")).w, scrollY };
})()"""


def layout_js(in_view=IN_VIEW) -> str:
    """LAYOUT_JS measuring `in_view` (what must be on screen without scrolling)."""
    return _LAYOUT_JS % (list(in_view), MIN_TARGET_PX, MIN_TARGET_PX)


LAYOUT_JS = layout_js()


# A long conversation: the transcript at its tallest, as after a few minutes of a call (test-only
# bubbles, added to the page's DOM before the sizes are measured).
LONG_CONVERSATION_JS = """(() => {
  const t = document.querySelector("#transcript");
  for (let i = t.children.length; i < 24; i++) {
    const li = document.createElement("li");
    li.className = li.dataset.role = i % 2 ? "assistant" : "user";
    li.innerHTML = '<span class="text"></span><span class="meta"></span>';
    li.firstChild.textContent = `a long conversation, line ${i + 1}`;
    t.append(li);
  }
})()"""


def check_layout(facts: dict, name: str, width: int, height: int, one_row: bool = True) -> None:
    """No sideways scroll; the call's controls and the conversation in view without scrolling; a
    text box one can read; every tap target at least 44 px; (tablets) the controls on one row."""
    assert facts["scrollY"] == 0, f"{name}: measured scrolled by {facts['scrollY']} px"
    assert facts["overflow"] <= 0, f"{name}: the page is {facts['overflow']} px wider than the screen"
    for sel, b in facts["inView"].items():
        assert b["x"] >= 0 and b["x"] + b["w"] <= width, f"{name}: {sel} off screen sideways: {b}"
        assert b["y"] >= 0 and b["y"] + min(b["h"], 100) <= height, f"{name}: {sel} below the fold: {b}"
    assert not facts["small"], f"{name}: tap targets under {MIN_TARGET_PX} px: {facts['small']}"
    assert facts["textBox"] >= MIN_TEXT_BOX_PX, f"{name}: the text box is {facts['textBox']:.0f} px wide"
    if one_row:
        assert facts["controlRows"] == 1, f"{name}: the call controls wrap onto {facts['controlRows']} rows"
