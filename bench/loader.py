"""Loader figures (one JSON line): a checkpoint in the official layout (4-GB shards + index) with
zero weights (--random: N(0, 0.02)), loaded by `omni.loader.load_net` in a fresh process: seconds,
peak address space (VmPeak) and peak resident memory (VmHWM) of the load, resident memory after
it (VmRSS) and the bytes of the loaded tensors, whether it stayed within --limit-gib of address
space (RLIMIT_AS, CPU only), and on CUDA `torch.cuda.max_memory_allocated`. --quantize int8|int4
rounds the LLM's linears while the shards are read.

    python bench/loader.py --full [--dtype bfloat16] [--limit-gib 30]      # 17.4 GB, needs ~18 GB disk
    python bench/loader.py --config tests/assets/official-v4_5/config.json --random  # MiniCPM-V 4.5, its
                          # official 4 shards (the index next to the config), random weights, 17.4 GB
    python bench/loader.py --full --random --quantize int4 --limit-gib 16
    python bench/loader.py --full --device cuda --dtype bfloat16
    python bench/loader.py                                                  # the tiny config
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHILD = r"""
import json, resource, sys, time, torch
from pathlib import Path
from omni.family import family_for, read_config
from omni.loader import load_net
ck, dtype, device, limit = Path(sys.argv[1]), getattr(torch, sys.argv[2]), sys.argv[3], float(sys.argv[4])
quantize = sys.argv[5] or None
def vm(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
cfg = read_config(json.loads((ck / "config.json").read_text()))
with torch.device("meta"):
    family_for(cfg).build(cfg)                      # imports first: not the loader's memory
if limit > 0:
    resource.setrlimit(resource.RLIMIT_AS, (int(limit * 2**30), resource.RLIM_INFINITY))
base, t = vm("VmPeak"), time.perf_counter()
net = load_net(ck, cfg, dtype, device, progress=False, quantize=quantize)
if device.startswith("cuda"):
    torch.cuda.synchronize()
tensors = [*net.parameters(), *net.buffers()]
llm = [t for n, t in [*net.named_parameters(), *net.named_buffers()] if n.startswith("llm.model.layers.")]
out = {"load_s": round(time.perf_counter() - t, 1), "vm_peak_gib": round(vm("VmPeak") / 2**30, 2),
       "vm_peak_delta_gib": round((vm("VmPeak") - base) / 2**30, 2), "rss_peak_gib": round(vm("VmHWM") / 2**30, 2),
       "rss_after_gib": round(vm("VmRSS") / 2**30, 2),
       "weight_gb": round(sum(x.numel() * x.element_size() for x in tensors) / 1e9, 2),
       "llm_layers_gb": round(sum(x.numel() * x.element_size() for x in llm) / 1e9, 2)}
if device.startswith("cuda"):
    out["cuda_max_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    out["cuda_allocated_gib"] = round(torch.cuda.memory_allocated() / 2**30, 2)
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true", help="configs/full.toml (the official shapes)")
    ap.add_argument("--config", help="any config.json or TOML model config (e.g. the official MiniCPM-V 4.5's)")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--limit-gib", type=float, default=30.0, help="address-space limit on a CPU (0: none)")
    ap.add_argument(
        "--dir", help="where to write the checkpoint (kept; reused when it holds one) (default: a temp dir, removed)"
    )
    ap.add_argument("--random", action="store_true", help="N(0, 0.02) weights instead of zeros")
    ap.add_argument("--quantize", choices=["int8", "int4"], help="quantize the LLM's linears while loading")
    a = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from omni.embedded import TINY_TOML, read_model_config, write_sharded

    path = Path(a.config) if a.config else REPO / "configs" / "full.toml" if a.full else TINY_TOML
    cfg = read_model_config(path)
    ck = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="omni-loader-"))
    try:
        t = time.perf_counter()
        written = ck / "model.safetensors.index.json"
        official = path.parent / "model.safetensors.index.json"  # an official index beside the config: its shards
        if a.dir and written.is_file():  # written by an earlier run (bench/gpu.sh loads it twice)
            total = json.loads(written.read_text())["metadata"]["total_size"]
        else:
            weight_map = json.loads(official.read_text())["weight_map"] if a.config and official.is_file() else None
            total = write_sharded(ck, cfg, weight_map=weight_map, random=a.random)
        write_s = time.perf_counter() - t
        limit = 0.0 if a.device.startswith("cuda") else a.limit_gib  # CUDA reserves address space at init
        p = subprocess.run(
            [sys.executable, "-c", CHILD, str(ck), a.dtype, a.device, str(limit), a.quantize or ""],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        out = {
            "bench": "loader",
            "config": a.config or ("full" if a.full else "tiny"),
            "dtype": a.dtype,
            "quantize": a.quantize,
            "weights": "random" if a.random else "zeros",
            "device": a.device,
            "checkpoint_gb": round(total / 1e9, 2),
            "shards": len(set(json.loads((ck / "model.safetensors.index.json").read_text())["weight_map"].values())),
            "write_s": round(write_s, 1),
            "limit_gib": limit or None,
            "loaded": p.returncode == 0,
        }
        if p.returncode == 0:
            out.update(json.loads(p.stdout.strip().splitlines()[-1]))
        else:
            out["error"] = (p.stderr.strip().splitlines() or ["?"])[-1][:300]
        print(json.dumps(out))
    finally:
        if not a.dir:
            shutil.rmtree(ck, ignore_errors=True)


if __name__ == "__main__":
    main()
