"""`worker = "ray"` on a real local Ray cluster: two CPU replicas of the tiny model, real gateways.

Sessions spread over both replicas and stay on theirs through a conversation with barge-in; a
killed replica's sessions are closed at once and the replica comes back; two gateways share the
replicas' capacity and a dead gateway's sessions are freed; /metrics and /readyz follow traffic."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import numpy as np
import pytest
import pytest_asyncio
import websockets

from rtclient import chunks_b64, force_long_replies, recv_until, start_server, utterance_24k_pcm16

ray = pytest.importorskip("ray", reason="pip install -e '.[ray]' (CI installs it)")

LEASE_S = 2.0


def _worker(max_sessions: int = 4):
    from streaming.engines.rayworker import RayWorker
    from streaming.server import checkpoint_dir
    from streaming.settings import ServerSettings
    from streaming.engines.worker import EngineSpec

    spec = EngineSpec.from_settings(ServerSettings(max_sessions=max_sessions, model_lanes=2))
    return RayWorker(checkpoint_dir(ServerSettings()), spec, replicas=2, lease_s=LEASE_S)


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=4, namespace="omni", include_dashboard=False, log_to_driver=False)
    w = _worker()  # creates the two replicas: 2 slots each
    yield w
    w.close()
    for r in w._remotes:
        ray.kill(r.actor, no_restart=True)
    ray.shutdown()


@pytest_asyncio.fixture
async def server(tiny_omni, cluster):
    s = await start_server(tiny_omni, worker=cluster)
    yield s
    await s.runner.cleanup()


async def _turn(ws, speech_16k) -> list[dict]:
    for c in chunks_b64(utterance_24k_pcm16(speech_16k)):
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": c}))
    return await recv_until(ws, lambda e: e["type"] == "response.done")


async def _all_free(cluster, timeout_s: float = 15.0) -> None:
    """Until the heartbeats say every replica slot is free again (an earlier test's sessions, or a
    dead gateway's, are freed when their lease runs out)."""
    async with asyncio.timeout(timeout_s):
        while any(not r.alive or r.free < r.slots for r in cluster._remotes):
            await asyncio.sleep(0.1)


def _ops(stats: list[dict]) -> dict[str, int]:
    return {st["replica"]: sum(st.get("ops", {}).values()) for st in stats}


@pytest.mark.asyncio
async def test_sessions_spread_and_keep_their_replica_through_barge_in(server, cluster, speech_16k, monkeypatch):
    async with websockets.connect(server.ws_url) as a, websockets.connect(server.ws_url) as b:
        for ws in (a, b):
            await recv_until(ws, lambda e: e["type"] == "session.created")
        assert sorted(c.engine.where for c in server.app["conversations"]) == ["omni-replica-0", "omni-replica-1"]
    force_long_replies(monkeypatch)  # a reply that cannot end before the user cuts in
    async with websockets.connect(server.ws_url) as ws:
        await recv_until(ws, lambda e: e["type"] == "session.created")
        (conv,) = server.app["conversations"]
        mine = conv.engine.where
        before = _ops(await cluster.stats())
        for c in chunks_b64(utterance_24k_pcm16(speech_16k)):
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": c}))
        await recv_until(ws, lambda e: e["type"] == "response.output_audio.delta")
        for c in chunks_b64(utterance_24k_pcm16(speech_16k, 0.1, 1.5)):  # the user talks over it
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": c}))
        done = await recv_until(ws, lambda e: e["type"] == "response.done")
        assert done[-1]["response"]["status"] == "cancelled"
        second = await recv_until(ws, lambda e: e["type"] == "response.done")
        assert second[-1]["response"]["status"] in ("completed", "incomplete")
        after = _ops(await cluster.stats())
    other = next(r for r in after if r != mine)
    assert after[mine] > before[mine] and after[other] == before[other]  # every op on its own replica


@pytest.mark.asyncio
async def test_a_killed_replica_closes_its_sessions_at_once_and_comes_back(server, cluster, speech_16k):
    async with websockets.connect(server.ws_url) as ws:
        await recv_until(ws, lambda e: e["type"] == "session.created")
        await _turn(ws, speech_16k)
        (conv,) = server.app["conversations"]
        remote = next(r for r in cluster._remotes if r.name == conv.engine.where)
        old = remote.incarnation
        os.kill(ray.get(remote.actor.pid.remote()), signal.SIGKILL)  # forced fault
        t = time.monotonic()
        events = await recv_until(ws, lambda e: e["type"] == "error", timeout=20)  # nothing sent by us
        assert events[-1]["error"]["code"] == "model_process_died"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd.code == 1011 and time.monotonic() - t < 10
    async with asyncio.timeout(120):
        while not (remote.alive and remote.incarnation != old):  # Ray restarted it
            await asyncio.sleep(0.5)
    async with websockets.connect(server.ws_url) as a, websockets.connect(server.ws_url) as b:
        for ws in (a, b):
            await recv_until(ws, lambda e: e["type"] == "session.created")
        assert remote.name in [c.engine.where for c in server.app["conversations"]]
        for ws in (a, b):
            assert (await _turn(ws, speech_16k))[-1]["response"]["status"] in ("completed", "incomplete")


@pytest.mark.asyncio
async def test_two_gateways_share_capacity_and_a_dead_gateways_sessions_are_freed(cluster):
    """The replicas hold 4 sessions in all, whichever gateway asks; a gateway that stops
    heartbeating (it died) loses its sessions after the lease."""
    from streaming.errors import CapacityError

    a, b = _worker(), _worker()
    try:
        async with asyncio.timeout(10):  # earlier tests' closes landed
            while sum(r.free for r in a._remotes) < 4:
                await asyncio.sleep(0.2)
        mine = [a.open_session() for _ in range(3)]
        for h in mine:
            await h.set_system(None, "audio_assistant", None, None)
        theirs = b.open_session()
        await theirs.set_system(None, "audio_assistant", None, None)
        await asyncio.sleep(1.5)  # B's heartbeat: all 4 taken
        with pytest.raises(CapacityError):
            await b.open_session().set_system(None, "audio_assistant", None, None)
        a._stop.set()  # gateway A dies
        async with asyncio.timeout(LEASE_S + 10):
            while sum(r.free for r in b._remotes) < 3:
                await asyncio.sleep(0.5)
        more = [b.open_session() for _ in range(3)]
        for h in more:
            await h.set_system(None, "audio_assistant", None, None)
        for h in more + [theirs]:
            h.close()
    finally:
        b.close()
        a.close()


@pytest.mark.asyncio
async def test_metrics_and_readiness_follow_traffic(server, cluster, speech_16k):
    import aiohttp

    def value(text: str, name: str) -> float:
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))

    await _all_free(cluster)
    async with aiohttp.ClientSession() as http:
        async with http.get(server.http + "/readyz") as r:
            ready = await r.json()
        assert r.status == 200 and ready["ready"] and len(ready["engines"]) == 2
        async with http.get(server.http + "/metrics") as r:
            before = await r.text()
        async with websockets.connect(server.ws_url) as ws:
            await recv_until(ws, lambda e: e["type"] == "session.created")
            await _turn(ws, speech_16k)
            async with http.get(server.http + "/metrics") as r:
                during = await r.text()
        async with asyncio.timeout(10):  # the server ends the session just after the close
            while value(
                after := await (await http.get(server.http + "/metrics")).text(), "omni_sessions_active"
            ) != value(before, "omni_sessions_active"):
                await asyncio.sleep(0.05)
    assert value(during, "omni_sessions_active") == value(before, "omni_sessions_active") + 1
    assert value(after, "omni_sessions_active") == value(before, "omni_sessions_active")
    assert (
        value(after, 'omni_sessions_total{transport="websocket"}')
        == value(before, 'omni_sessions_total{transport="websocket"}') + 1
    )
    assert (
        value(after, "omni_time_to_first_audio_seconds_count")
        == value(before, "omni_time_to_first_audio_seconds_count") + 1
    )
    assert value(after, "omni_unit_cost_seconds_count") > value(before, "omni_unit_cost_seconds_count")
    assert value(after, 'omni_model_step_seconds_count{op="reply_step"}') > value(
        before, 'omni_model_step_seconds_count{op="reply_step"}'
    )
    assert value(after, "omni_replica_sessions_total") == value(before, "omni_replica_sessions_total") + 1
    assert "omni_engine_queue_depth{" in after and 'omni_engine_batch_size{kind="llm"' in after.replace(
        'replica="omni-replica-0",', ""
    ).replace('replica="omni-replica-1",', "")
    assert np.isfinite(value(after, "omni_playout_underruns_total"))
