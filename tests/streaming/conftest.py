"""Gateway test fixtures: the embedded tiny model loaded once, a live server per test.

`server` runs on one shared `ProcessWorker` (two model processes, each a batch engine: the path
`omni serve` takes on a CPU); tests that look inside a conversation's engine start their own server
on an in-process engine thread (`start_server(tiny_omni)`), where the engine session is reachable."""

from __future__ import annotations

import numpy as np
import pytest
import pytest_asyncio
import soundfile as sf

from rtclient import ASSETS, start_server


@pytest.fixture(scope="session")
def tiny_omni():
    from streaming.server import load_model
    from streaming.settings import ServerSettings

    omni, _ = load_model(ServerSettings())
    return omni


@pytest.fixture(scope="session")
def speech_16k() -> np.ndarray:
    audio, rate = sf.read(str(ASSETS / "speech_16k.wav"), dtype="float32")
    assert rate == 16000
    return audio


@pytest.fixture(scope="session")
def proc_worker():
    from streaming.engines.procs import ProcessWorker
    from streaming.server import checkpoint_dir
    from streaming.settings import ServerSettings
    from streaming.engines.worker import EngineSpec

    w = ProcessWorker(checkpoint_dir(ServerSettings()), EngineSpec.from_settings(ServerSettings(model_lanes=2)))
    yield w
    w.close()


@pytest_asyncio.fixture
async def server(tiny_omni, proc_worker):
    s = await start_server(tiny_omni, worker=proc_worker)
    yield s
    await s.runner.cleanup()
