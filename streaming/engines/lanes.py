"""How many model copies and engines this machine runs, decided from memory before loading.

On a CPU the default runs one model process per core, each with its own copy of the weights; a
full-size checkpoint is 17 GB in bf16, so that default must ask the memory first. `plan_lanes`
takes the checkpoint's loaded size (omni/footprint.py) and the memory there is: as many processes
as cores and copies fit; one copy on threads when two do not fit; a refusal in one line when even
one copy does not. Each engine's KV pools get a share of what the copies leave. A GPU (one engine)
and Ray (replicas on their own nodes) are not planned here. Owns the plan and its reason, which
the startup line and /healthz show, and building the worker it chose (`make_worker`: the
model loaded where the engines run); does not own the engines themselves (worker.py, procs.py).
"""

from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass
from pathlib import Path

GB = 1e9
# A model process's own memory besides the weights and KV pools: the interpreter, torch,
# tokenizers, the engine's buffers. Measured 470 MB with the tiny model (issue 25's fuzz runs).
PROCESS_BASE_BYTES = 600 * 2**20
KV_SHARE = 0.9  # of the memory the copies leave, for the engines' KV pools (the rest: activations)
MIN_SLOTS = 2  # one session and the background (transcript) slot: less and the engine is useless


class NoRoom(RuntimeError):
    """Not even one copy of the model fits in memory: the server refuses to start (one line)."""


@dataclass(frozen=True)
class LanePlan:
    kind: str  # "processes" | "threads" | "ray"
    lanes: int  # engines (one per model process when kind is processes)
    reason: str  # one sentence: why this many, for the startup line and /healthz
    weights_gb: float | None = None  # one loaded copy; None where not planned (GPU, Ray)
    available_gb: float | None = None
    kv_cache_gb: float = 0.0  # per engine; 0 = the engine decides (the settings' kv_cache_gb, CUDA)

    def as_dict(self) -> dict:
        return asdict(self)


def _size(n_bytes: float) -> str:
    return f"{n_bytes / GB:.1f} GB" if n_bytes >= 0.95 * GB else f"{n_bytes / 1e6:.0f} MB"


def available_bytes() -> int:
    """Memory this process may still use: MemAvailable, or less under a cgroup limit."""
    avail = _meminfo_kb("MemAvailable") * 1024
    cgroup = Path("/sys/fs/cgroup")
    try:  # cgroup v2: the limit of this process's group minus what it uses
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            avail = min(avail, int(limit) - int((cgroup / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return max(0, avail)


def _meminfo_kb(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return (os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) // 1024  # no /proc: all of it


def plan_lanes(settings, weights: int, kv_per_slot: int, available: int, cores: int) -> LanePlan:
    """The engines for a CPU: `weights` one loaded copy (bytes), `kv_per_slot` one session's KV
    (bytes), `available` the memory budget (bytes), `cores` the cores there are.

    Raises:
        NoRoom: one copy does not fit, or the processes the settings ask for do not.
    """
    w_gb, a_gb = weights / GB, available / GB
    avail = _size(available)
    need_one = weights + MIN_SLOTS * kv_per_slot  # on threads: the gateway's own memory is spent already
    per_process = weights + PROCESS_BASE_BYTES + MIN_SLOTS * kv_per_slot
    if need_one > available:
        raise NoRoom(
            f"the model needs {_size(need_one)} ({settings.dtype} weights {_size(weights)} and the KV of one "
            f"session) but {avail} of memory is available: "
            + ("load it with --dtype bfloat16, " if settings.dtype == "float32" else "")
            + ("quantize it (--quantize int4), " if not settings.quantize else "")
            + "free memory, or use a machine with more"
        )
    fit = int(available // per_process)
    wanted = settings.lanes
    if settings.worker == "processes" and fit < wanted:
        raise NoRoom(
            f'worker = "processes" with {wanted} lane(s) needs {wanted} copies of {_size(per_process)} '
            f"but {avail} of memory is available ({fit} fit): set model_lanes = {max(fit, 1)} "
            'or worker = "threads" (one copy)'
        )
    explicit = settings.worker in ("processes", "threads")
    if explicit:
        kind, lanes = settings.worker, wanted
        reason = f'worker = "{kind}" with {lanes} lane(s), as configured'
    elif wanted <= 1:
        kind, lanes = "threads", 1
        reason = "one engine on a thread (one lane: model_lanes = 1 or one core)"
    elif fit >= 2:
        kind, lanes = "processes", min(wanted, fit)
        why = "one per core" if lanes == wanted else f"{fit} copies fit, {cores} cores"
        reason = f"{lanes} model processes ({why}): each holds a {_size(weights)} copy, {avail} available"
    else:
        kind, lanes = "threads", 1
        reason = (
            f"two copies of {_size(per_process)} do not fit in {avail} available: "
            "one copy, one engine on a thread using every core"
        )
    copies = lanes if kind == "processes" else 1
    left = available - copies * (weights + (PROCESS_BASE_BYTES if kind == "processes" else 0))
    kv_gb = settings.kv_cache_gb or KV_SHARE * left / lanes / 2**30
    return LanePlan(kind, lanes, reason, round(w_gb, 2), round(a_gb, 2), round(kv_gb, 3))


def plan_for(settings, checkpoint: str | Path) -> LanePlan:
    """The plan for `settings` on this machine (reads only the checkpoint's headers)."""
    import torch

    from omni.footprint import kv_bytes_per_token, weight_bytes

    if settings.worker == "ray" or not settings.device.startswith("cpu"):
        why = "Ray replicas" if settings.worker == "ray" else "a GPU: one engine batches every session"
        return LanePlan(settings.worker_kind, settings.lanes, why)
    from .worker import EngineSpec

    dtype = getattr(torch, settings.dtype)
    weights = weight_bytes(checkpoint, dtype, settings.quantize)
    kv_slot = kv_bytes_per_token(checkpoint, dtype) * EngineSpec.from_settings(settings).slot_tokens
    budget = int(settings.memory_gb * GB) if settings.memory_gb else available_bytes()
    return plan_lanes(settings, weights, kv_slot, budget, os.cpu_count() or 1)


def load_model(settings):
    """The model for an in-process worker, loaded on a thread of its own that then ends: torch's
    OpenMP pool, made by whichever thread first runs a parallel op, goes with that thread, so
    the engine thread's pool is the only one. Two pools in one process cost an engine thread
    half its speed on 2 cores (libgomp stops spinning once it manages more threads than there
    are cores; bench/engine.py --thread-compare)."""
    import threading

    import torch
    from omni.loader import load

    ckpt = checkpoint_dir(settings)
    box: dict = {}

    def run() -> None:
        try:
            box["omni"] = load(
                ckpt, dtype=getattr(torch, settings.dtype), device=settings.device, quantize=settings.quantize
            )
        except BaseException as e:  # noqa: BLE001 - raised again on the caller's thread
            box["error"] = e

    loader = threading.Thread(target=run, name="omni-load")
    loader.start()
    loader.join()
    if "error" in box:
        raise box["error"]
    return box["omni"], settings.model is None


def make_worker(settings, plan: LanePlan):
    """The model worker `plan` (lanes.plan_for) chose, with the model loaded where it runs."""
    import dataclasses

    from .worker import EngineSpec, EngineWorker

    spec = EngineSpec.from_settings(settings)
    if settings.worker_kind == "ray":
        from .rayworker import RayWorker

        replicas = settings.ray_replicas or (_gpus() if settings.device.startswith("cuda") else settings.lanes)
        return RayWorker(
            str(checkpoint_dir(settings)),
            dataclasses.replace(spec, lanes=replicas),
            settings.dtype,
            settings.device,
            replicas,
            settings.ray_address,
            settings.ray_lease_s,
            settings.ray_max_restarts,
            settings.model_step_timeout_s,
            settings.quantize,
        )
    spec = dataclasses.replace(spec, lanes=plan.lanes, kv_cache_gb=plan.kv_cache_gb)
    if plan.kind == "processes":
        from .procs import ProcessWorker

        return ProcessWorker(
            str(checkpoint_dir(settings)),
            spec,
            settings.dtype,
            settings.device,
            settings.model_step_timeout_s,
            settings.quantize,
        )
    return EngineWorker(load_model(settings)[0], spec)


def _gpus() -> int:
    import torch

    return max(1, torch.cuda.device_count())


def checkpoint_dir(settings) -> Path:
    """--model (a folder, embedded:NAME, or a hub id fetched into the Hugging Face cache), or the
    embedded tiny model (built once into the cache). Either family: `model_family` tells which."""
    return _resolved(settings.model, settings.revision)


def model_family(settings, omni=None):
    """The loaded model's `omni.family.Family`: the bundle's own, or read from the checkpoint's
    config.json when the model lives in model processes or replicas."""
    from omni.family import family_of_dir

    return omni.family if omni is not None else family_of_dir(_resolved(settings.model, settings.revision))


@functools.lru_cache(maxsize=8)
def _resolved(model: str | None, revision: str | None) -> Path:
    from omni.embedded import resolve_model

    return resolve_model(model, revision)  # once per process: a hub id is looked up (or fetched) once


def weights_of(settings) -> dict:
    """What the engines run ({"dtype", "quantization", "kernel"}), from the checkpoint's config and
    the settings, as each engine's load decides it (omni.quantized.describe)."""
    import json

    import torch
    from omni.quantized import describe

    ckpt = checkpoint_dir(settings)
    raw = json.loads((ckpt / "config.json").read_text())
    return describe(ckpt, raw, getattr(torch, settings.dtype), settings.device, settings.quantize)
