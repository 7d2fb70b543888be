"""The service says which weights run: /healthz `weights` (dtype, quantization, kernel) for a model
loaded with `quantize`, and the settings refuse a quantization they do not know."""

from __future__ import annotations

import json

import aiohttp
import pytest


@pytest.mark.asyncio
async def test_healthz_says_which_weights_run():
    from aiohttp import web
    from streaming.server import build_app, load_model, weights_of
    from streaming.settings import ServerSettings

    settings = ServerSettings(quantize="int4")
    omni, embedded = load_model(settings)
    want = {"dtype": "float32", "quantization": "int4 g128 (--quantize, round-to-nearest)", "kernel": "int4pack-cpu"}
    assert omni.weights == want and weights_of(settings) == want  # what a parent says its model processes run
    runner = web.AppRunner(build_app(settings, omni, embedded))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz") as r:
            assert json.loads(await r.text())["weights"] == want
    finally:
        await runner.cleanup()


def test_settings_take_int8_int4_and_a_revision_only():
    from streaming.settings import ServerSettings, SettingsError, load_settings

    assert load_settings(None, quantize="int8", revision="v1").quantize == "int8"
    with pytest.raises(SettingsError, match="quantize must be one of int8, int4"):
        ServerSettings(quantize="int3")
