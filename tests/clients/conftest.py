"""Stock realtime clients against a live `omni serve`: one server subprocess (the embedded model,
its model processes, a short reply cap) shared by the client tests, and speech to feed them."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SPEECH = Path(__file__).resolve().parent.parent / "assets" / "golden" / "tiny-a" / "speech_16k.wav"
# Replies long enough to interrupt (the random tiny model rarely stops by itself), short enough to
# keep each client's test well under a minute.
CONFIG = """
port = {port}
max_reply_tokens = 40
max_speech_s = 6.0
"""


@dataclass(frozen=True)
class LiveServer:
    port: int
    log_path: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_base(self) -> str:
        """What the SDKs take as their base URL: they append `/realtime?model=...`."""
        return f"ws://127.0.0.1:{self.port}/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def live_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("omni-serve")
    port = _free_port()
    (d / "server.toml").write_text(CONFIG.format(port=port))
    log_path = d / "server.log"
    with open(log_path, "w") as log:
        p = subprocess.Popen(
            [sys.executable, "-m", "streaming.cli", "serve", "--config", str(d / "server.toml")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(port, log_path)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert p.poll() is None, f"omni serve exited:\n{server.log()}"
            try:
                with urllib.request.urlopen(f"{server.http}/readyz", timeout=5) as r:
                    if json.load(r).get("ready"):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"omni serve not ready in 180 s:\n{server.log()}"
            time.sleep(0.5)
        yield server
    finally:
        p.terminate()
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


@pytest.fixture(scope="session")
def speech_16k() -> np.ndarray:
    audio, rate = sf.read(str(SPEECH), dtype="float32")
    assert rate == 16000
    return audio
