"""Gateway test fixtures: the embedded tiny model loaded once, a live server per test."""
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


@pytest_asyncio.fixture
async def server(tiny_omni):
    s = await start_server(tiny_omni)
    yield s
    await s.runner.cleanup()
