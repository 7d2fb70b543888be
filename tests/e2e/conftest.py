"""Browser end-to-end fixtures: a loopback-only network namespace, the omni server in-process
(embedded tiny model, run by two model processes as `omni serve` does on a CPU) on 127.0.0.1, and
two engines: headless Debian Chromium driven by Playwright with a fake camera and a WAV file as
the fake microphone, and Debian's WebKitGTK driven by its WebDriver (webkit_driver.py) with mock
devices. Never downloads a browser.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import subprocess
import threading
from pathlib import Path

import pytest
import webkit_driver

REPO = Path(__file__).resolve().parents[2]
SPEECH = REPO / "tests" / "assets" / "speech"
SHOTS = REPO / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CLONE_NEWNET = 0x40000000
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
]

playwright_sync = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the `test` extra)")


def _enter_loopback_netns() -> None:
    """Move this process into a fresh network namespace with only `lo` (up). Idempotent."""
    if os.environ.get("OMNI_E2E_NETNS") == "1":
        return
    if os.geteuid() != 0:
        pytest.fail(
            "the browser E2E must run in a loopback-only network namespace: run as root, or "
            "`unshare -rn sh -c 'ip link set lo up && python -m pytest tests/e2e'`",
            pytrace=False,
        )
    if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNET) != 0:
        pytest.fail(f"unshare(CLONE_NEWNET) failed: errno {ctypes.get_errno()} (no CAP_SYS_ADMIN here?)", pytrace=False)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert [ln.split(":")[1].strip() for ln in links.splitlines()] == ["lo"], links
    os.environ["OMNI_E2E_NETNS"] = "1"


@pytest.fixture(scope="session")
def netns():
    _enter_loopback_netns()


@pytest.fixture(scope="session")
def tiny_model(netns):
    from streaming.server import load_model
    from streaming.settings import ServerSettings

    omni, embedded = load_model(ServerSettings())
    assert embedded
    return omni


class Server:
    """`streaming.server.build_app` on its own event loop thread, bound to 127.0.0.1:<free port>."""

    def __init__(self, omni, worker, **overrides):
        from streaming.server import build_app
        from streaming.settings import ServerSettings

        self.settings = ServerSettings(host="127.0.0.1", port=0, **overrides)
        self.undo: list = []  # test patches to revert when the server stops
        self.app = build_app(self.settings, omni, embedded=True, worker=worker)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="omni-e2e-server", daemon=True)
        self.thread.start()
        assert self.ready.wait(30), "server did not start"
        self.url = f"http://127.0.0.1:{self.port}/"

    def _run(self) -> None:
        from aiohttp import web

        asyncio.set_event_loop(self.loop)
        self.runner = web.AppRunner(self.app, access_log=None)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    def call(self, fn):
        """Run `fn()` on the server loop (to inspect conversations safely)."""

        async def wrap():
            return fn()

        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result(10)

    def stop(self) -> None:
        if not self.thread.is_alive():  # stopped by the test already
            return
        for undo in self.undo:
            undo()
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="session")
def model_worker(tiny_model):
    from streaming.engines.procs import ProcessWorker
    from streaming.server import checkpoint_dir
    from streaming.settings import ServerSettings
    from streaming.engines.worker import EngineSpec

    w = ProcessWorker(checkpoint_dir(ServerSettings()), EngineSpec.from_settings(ServerSettings(model_lanes=2)))
    yield w
    w.close()


@pytest.fixture
def server_factory(tiny_model, model_worker):
    servers = []

    def make(**overrides) -> Server:
        s = Server(tiny_model, model_worker, **overrides)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


V45_MODEL = "embedded:minicpmv-4_5"  # the tiny MiniCPM-V 4.5: camera + text, no audio


@pytest.fixture(scope="session")
def tiny_v45_model(netns):
    from streaming.server import load_model
    from streaming.settings import ServerSettings

    omni, _ = load_model(ServerSettings(model=V45_MODEL))
    assert omni.family.key == "v-4.5"
    return omni


@pytest.fixture
def v45_server_factory(tiny_v45_model):
    """A server running the tiny MiniCPM-V 4.5 on the app's own engine thread (`omni serve
    --model embedded:minicpmv-4_5` on one lane)."""
    servers = []

    def make(**overrides) -> Server:
        s = Server(tiny_v45_model, None, model=V45_MODEL, **overrides)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


@pytest.fixture(scope="module")  # module: its event loop must be gone before asyncio tests run
def playwright_instance(netns):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: `apt-get install -y chromium` (never `playwright install`)", pytrace=False)
    with playwright_sync.sync_playwright() as p:
        yield p


@pytest.fixture
def browser_factory(playwright_instance):
    """browser_factory("one_turn.wav") -> a Chromium whose microphone plays that WAV once."""
    browsers = []

    def make(wav: str, loop: bool = False):
        path = SPEECH / wav
        assert path.is_file(), f"{path} missing: python tests/e2e/make_speech.py"
        fake = f"--use-file-for-fake-audio-capture={path}{'' if loop else '%noloop'}"
        b = playwright_instance.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS + [fake])
        browsers.append(b)
        return b

    yield make
    for b in browsers:
        b.close()


@pytest.fixture(scope="session")
def shots_dir() -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS


@pytest.fixture(scope="session")
def x_display(netns):
    """An X display for WebKit: $DISPLAY if set, else a private Xvfb (inside the netns)."""
    webkit_driver.require()
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    xvfb = webkit_driver.Xvfb()
    yield xvfb.display
    xvfb.close()


@pytest.fixture
def webkit_factory(x_display, tmp_path):
    """webkit_factory("desktop" | "ipad") -> a WebKitPage (one browser, one page)."""
    pages = []

    def make(profile: str) -> webkit_driver.WebKitPage:
        page = webkit_driver.WebKitPage(profile, tmp_path / f"webkit-{profile}-{len(pages)}", x_display)
        pages.append(page)
        return page

    yield make
    for p in pages:
        p.close()
