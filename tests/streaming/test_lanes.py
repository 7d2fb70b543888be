"""Model processes sized by memory (streaming/engines/lanes.py): the plan from a checkpoint's size and a
stated memory budget, on a full-size checkpoint in the official layout (sparse files: headers
and holes, no disk) and through `omni serve` on the embedded model."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from rtclient import free_port, omni_serve
from streaming.engines.lanes import GB, PROCESS_BASE_BYTES, NoRoom, plan_for, plan_lanes
from streaming.settings import ServerSettings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def full_checkpoint(tmp_path_factory) -> Path:
    """configs/full.toml in the official layout, bf16 zeros in sparse shards (17.4 GB that take no disk)."""
    from omni.embedded import read_model_config, write_sharded

    ck = tmp_path_factory.mktemp("full")
    write_sharded(ck, read_model_config(REPO / "configs" / "full.toml"))
    return ck


def test_full_size_checkpoint_weighs_what_its_tensors_do(full_checkpoint):
    import torch

    from omni.footprint import kv_bytes_per_token, weight_bytes

    bf16 = weight_bytes(full_checkpoint, torch.bfloat16)
    assert 17.0e9 < bf16 < 18.5e9, bf16  # 8.7 B parameters, the TTS in float32 either way
    assert 34.0e9 < weight_bytes(full_checkpoint, torch.float32) < 35.5e9
    assert kv_bytes_per_token(full_checkpoint, torch.bfloat16) == 2 * 28 * 4 * 128 * 2  # Qwen2-7B, GQA 4 KV heads


@pytest.mark.parametrize(
    "budget_gb,kind,lanes",
    [
        (64.0, "processes", 2),  # two copies fit: one process per core
        (24.0, "threads", 1),  # this machine: two 17.4 GB copies do not fit, one does
    ],
)
def test_plan_for_a_full_size_checkpoint(full_checkpoint, budget_gb, kind, lanes):
    s = ServerSettings(model=str(full_checkpoint), dtype="bfloat16", model_lanes=2, memory_gb=budget_gb)
    plan = plan_for(s, full_checkpoint)
    assert (plan.kind, plan.lanes) == (kind, lanes), plan
    assert plan.weights_gb is not None and 17.0 < plan.weights_gb < 18.5 and plan.available_gb == budget_gb
    copies = lanes if kind == "processes" else 1
    assert 0 < plan.kv_cache_gb * 2**30 * lanes < (budget_gb - copies * plan.weights_gb) * GB  # pools in what is left
    assert str(lanes) in plan.reason or "one copy" in plan.reason, plan.reason


def test_one_copy_that_does_not_fit_refuses_in_one_line(full_checkpoint):
    with pytest.raises(NoRoom) as e:  # float32 (the default dtype) doubles the weights
        plan_for(ServerSettings(model=str(full_checkpoint), memory_gb=24.0), full_checkpoint)
    msg = str(e.value)
    assert "\n" not in msg and "34." in msg and "24.0 GB" in msg and "--dtype bfloat16" in msg, msg
    with pytest.raises(NoRoom, match="weights 17.9 GB"):
        plan_for(ServerSettings(model=str(full_checkpoint), dtype="bfloat16", memory_gb=12.0), full_checkpoint)


def test_explicit_processes_that_do_not_fit_are_refused_with_what_would():
    s = ServerSettings(worker="processes", model_lanes=4)
    per = 2 * GB + PROCESS_BASE_BYTES
    with pytest.raises(NoRoom, match="model_lanes = 2"):
        plan_lanes(s, int(2 * GB), 0, int(2.5 * per), cores=4)
    plan = plan_lanes(ServerSettings(worker="threads", model_lanes=2), int(2 * GB), 0, int(2.5 * GB), cores=4)
    assert (plan.kind, plan.lanes) == ("threads", 2) and "as configured" in plan.reason


def test_memory_caps_processes_below_cores():
    s = ServerSettings(model_lanes=4)
    plan = plan_lanes(s, int(1 * GB), 0, int(3.5 * (GB + PROCESS_BASE_BYTES)), cores=4)
    assert (plan.kind, plan.lanes) == ("processes", 3) and "3 copies fit, 4 cores" in plan.reason, plan


def _serve_fails(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streaming.cli", "serve", "--port", str(free_port()), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_omni_serve_refuses_to_start_when_one_copy_does_not_fit():
    p = _serve_fails("--memory-gb", "0.01")
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("omni:")]
    assert len(lines) == 1 and lines[0].startswith("omni: cannot start: the model needs"), p.stderr
    assert "Traceback" not in p.stderr


def test_omni_serve_falls_back_to_threads_when_two_copies_do_not_fit():
    """1 GB holds the tiny model once but not two model processes (each 0.6 GB of its own): one
    copy on threads, said at startup and in /healthz."""
    port = free_port()
    p, lines = omni_serve("--port", str(port), "--memory-gb", "1.0", "--config", str(_two_lanes()))
    try:
        plan_line = [ln for ln in lines if ln.startswith("omni: threads")]
        assert plan_line and "two copies of" in plan_line[0] and "1.0 GB available" in plan_line[0], lines
        assert any("model ready (1 lane(s), threads" in ln for ln in lines), lines
        health = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10))
        plan = health["worker"]["plan"]
        assert health["worker"]["kind"] == plan["kind"] == "threads" and plan["available_gb"] == 1.0, health
        assert "do not fit" in plan["reason"]
    finally:
        p.terminate()
        p.wait(30)
        p.stderr.close()


def _two_lanes() -> Path:
    """Two lanes wanted whatever this machine's cores (a TOML in the session's temp dir)."""
    import tempfile

    path = Path(tempfile.mkdtemp()) / "two-lanes.toml"
    path.write_text("model_lanes = 2\n")
    return path
