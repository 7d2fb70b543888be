"""WebKit (Safari's engine) for the browser E2E: Debian's WebKitGTK driven by its WebDriver
(webkit2gtk-driver) through Selenium, on an Xvfb display, with webkit_browser.py as the browser.

What must be installed: `apt-get install --no-install-recommends webkit2gtk-driver
gir1.2-webkit2-4.1 python3-gi xvfb` (.ci/run does it; WebKit's GStreamer plugins come with it) and
selenium (pinned in the `test` extra). Without them the WebKit tests skip, saying what is missing, except on CI
(OMNI_CI=1), where they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

WEBDRIVER = "/usr/bin/WebKitWebDriver"
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with python3-gi: the venv has no GObject bindings
BROWSER = Path(__file__).with_name("webkit_browser.py")
APT = "webkit2gtk-driver gir1.2-webkit2-4.1 python3-gi xvfb"
CONSOLE_LINE = re.compile(r"CONSOLE [A-Z]+")  # WebKit's console lines: "CONSOLE LOG ...", "CONSOLE JS ERROR ..."


def missing() -> str | None:
    """What is missing to run WebKit here, or None."""
    if not os.path.exists(WEBDRIVER):
        return f"{WEBDRIVER} missing"
    gi = "import gi; gi.require_version('WebKit2', '4.1'); gi.require_version('Gtk', '3.0'); from gi.repository import WebKit2"
    if not os.path.exists(SYSTEM_PYTHON) or subprocess.run([SYSTEM_PYTHON, "-c", gi], capture_output=True).returncode:
        return "WebKit2 4.1 GObject bindings missing for /usr/bin/python3"
    if not os.environ.get("DISPLAY") and not shutil.which("Xvfb"):
        return "no DISPLAY and no Xvfb"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium missing (pip install -e '.[test]')"
    return None


def require() -> None:
    """Skip (a developer machine) or fail (CI) when WebKit cannot run here."""
    why = missing()
    if why is None:
        return
    msg = f"WebKit E2E: {why}; apt-get install -y {APT}"
    if os.environ.get("OMNI_CI"):
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


class Xvfb:
    """A private X display (the browser needs one even to render off screen)."""

    def __init__(self, size: str = "1600x1200x24") -> None:
        r, w = os.pipe()
        self.proc = subprocess.Popen(
            ["Xvfb", "-displayfd", str(w), "-screen", "0", size, "-nolisten", "tcp"],
            pass_fds=(w,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(w)
        with os.fdopen(r) as f:
            number = f.readline().strip()
        assert number, "Xvfb did not start"
        self.display = f":{number}"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class WebKitPage:
    """One WebKit browser with one page; `js` runs a script there and returns its value."""

    def __init__(self, profile: str, workdir: Path, display: str) -> None:
        from selenium import webdriver
        from selenium.webdriver.webkitgtk.options import Options
        from selenium.webdriver.webkitgtk.service import Service

        self.profile, self.dir = profile, workdir
        self.console_file, self.downloads = workdir / "console.log", workdir / "downloads"
        self.downloads.mkdir(parents=True, exist_ok=True)
        self.console_file.touch()
        opts = Options()
        opts.binary_location = SYSTEM_PYTHON
        for arg in (str(BROWSER), "--automation", "--profile", profile, "--data", str(workdir / "data")):
            opts.add_argument(arg)
        for arg in ("--console", str(self.console_file), "--downloads", str(self.downloads)):
            opts.add_argument(arg)
        env = {**os.environ, "DISPLAY": display}
        service = Service(executable_path=WEBDRIVER, log_output=str(workdir / "webdriver.log"), env=env)
        self.driver = webdriver.WebKitGTK(options=opts, service=service)
        self.console_seen = 0

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def wait(self, expr: str, timeout_s: float = 20.0, what: str = ""):
        """Until the JS expression is truthy; its value."""
        end = time.monotonic() + timeout_s
        while True:
            value = self.js(f"return ({expr});")
            if value:
                return value
            if time.monotonic() > end:
                raise AssertionError(f"[{self.profile}] timed out after {timeout_s} s waiting for {what or expr}")
            time.sleep(0.05)

    def click(self, css: str) -> None:
        from selenium.webdriver.common.by import By

        self.driver.find_element(By.CSS_SELECTOR, css).click()

    def type(self, css: str, text: str) -> None:
        from selenium.webdriver.common.by import By

        self.driver.find_element(By.CSS_SELECTOR, css).send_keys(text)

    def text(self, css: str) -> str:
        return self.js("return document.querySelector(arguments[0]).textContent", css)

    def visible(self, css: str) -> bool:
        return self.js("const e = document.querySelector(arguments[0]); return !!e && e.offsetParent !== null", css)

    def resize(self, width: int, height: int) -> None:
        """The page's viewport (there is no window manager: the window is all page)."""
        self.driver.set_window_rect(0, 0, width, height)
        self.wait(f"innerWidth === {width} && innerHeight === {height}", 5, f"a {width}x{height} viewport")

    def frames(self, n: int = 3) -> None:
        """Until the page has painted `n` frames (a screenshot right after a resize can show the old one)."""
        self.driver.execute_async_script(
            "let n = arguments[0]; const done = arguments[1];"
            "const next = () => (--n ? requestAnimationFrame(next) : done()); requestAnimationFrame(next);",
            n,
        )

    def console_works(self) -> list[str]:
        """Prove the capture is no blind spot: a line the page prints shows up. Returns the other
        lines printed so far (all of them consumed)."""
        self.js("console.info('omni test: console capture check')")
        end, seen = time.monotonic() + 5, []
        while not any("console capture check" in ln for ln in seen):
            assert time.monotonic() < end, f"[{self.profile}] WebKit's console output is not captured"
            time.sleep(0.05)
            seen += self.console()
        return [ln for ln in seen if "console capture check" not in ln]

    def console(self) -> list[str]:
        """The console lines the page printed since the last call (WebKit's own, not a JS hook)."""
        lines = self.console_file.read_text(errors="replace").splitlines()
        new, self.console_seen = lines[self.console_seen :], len(lines)
        return [ln for ln in new if CONSOLE_LINE.search(ln)]

    def close(self) -> None:
        self.driver.quit()
