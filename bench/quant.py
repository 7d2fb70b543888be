"""Quantization figures (one JSON line): bf16, int8 and int4 LLM linears at full-size shapes, in one run.

A random-weights checkpoint in the official layout (configs/full.toml, every tower cut to --layers)
is written once; each mode loads it through `omni.loader.load_net` in a fresh process and reports:
* `weight_gb`: bytes of the loaded tensors, `llm_layers_gb` the decoder layers' share;
* `load_s`, `load_peak_gb`: the load's time and its growth of peak resident memory (VmHWM);
* `unit_ms`: one 1-s unit (audio + a 640x480 frame) prefilled by the batch engine, one session;
* `llm_decode_tok_s`: the engine's one-token LLM forwards per second at 1 and 16 sessions
  (bench/engine.py's measure, lm head and sampling included);
* `step_ms`: one decode step of B rows split into the --layers decoder layers and the lm head
  (best of --repeats), and from them `full_decode_tok_s_est`: B / (28 layers + lm head), the
  figure for the full 28-layer LLM, which this machine's memory may not hold in bf16.
`ratios` divide each quantized mode's figures by bf16's.

    python bench/quant.py --layers 2                  # CPU, 1 thread; about 3.5 GB of disk and of memory per mode
    python bench/quant.py --device cuda --source random --layers 28    # GPU: no checkpoint written
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
BENCH = Path(__file__).resolve().parent
FULL_LAYERS = 28
MODES = ("bf16", "int8", "int4")


def vm(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    return 0


def child(a) -> dict:
    """One mode, in this (fresh) process."""
    import torch

    sys.path.insert(0, str(BENCH))
    from engine import run_level
    from fullrand import bundle, full_config, full_random

    from omni.config import OmniConfig
    from omni.loader import load_net
    from omni.quantized import weights_info

    if a.threads:
        torch.set_num_threads(a.threads)
    dtype, quantize = torch.bfloat16, (None if a.mode == "bf16" else a.mode)
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    cfg = OmniConfig.from_dict(full_config(a.layers))
    base, t = vm("VmHWM"), time.perf_counter()
    if a.source == "checkpoint":
        net = load_net(Path(a.ckpt), cfg, dtype, a.device, progress=False, quantize=quantize)
        sync()
        m = bundle(net, a.device, dtype, weights_info(net, dtype, quantize, None))
    else:
        m = full_random(a.device, dtype, a.layers, quantize)
    out: dict = {"weights": m.weights, "load_s": round(time.perf_counter() - t, 1)}
    if a.source == "checkpoint" and not a.device.startswith("cuda"):
        out["load_peak_gb"] = round((vm("VmHWM") - base) / 1e9, 2)
    named = [*m.net.named_parameters(), *m.net.named_buffers()]
    out["weight_gb"] = round(sum(x.numel() * x.element_size() for _, x in named) / 1e9, 3)
    out["llm_layers_gb"] = round(
        sum(x.numel() * x.element_size() for n, x in named if n.startswith("llm.model.layers.")) / 1e9, 3
    )
    if a.device.startswith("cuda"):
        out["cuda_allocated_gb"] = round(torch.cuda.memory_allocated() / 1e9, 2)
    levels = {}
    for n in (1, 16):
        r = run_level(m, n, 32, a, sync)
        levels[str(n)] = {"unit_ms": r["unit_ms"], "llm_decode_tok_s": r["llm_decode_tok_s"]}
    out["unit_ms"] = levels["1"]["unit_ms"]
    out["llm_decode_tok_s"] = {k: v["llm_decode_tok_s"] for k, v in levels.items()}
    with torch.inference_mode():  # a fixed float GEMM: how busy the machine was during this mode
        x = m.net.llm.embed(torch.zeros(1, dtype=torch.long, device=a.device))
        out["control_lm_head_ms"] = round(timed(lambda: m.net.llm.lm_head(x), a.repeats, sync), 1)
    return out


def timed(fn, repeats: int, sync) -> float:
    """Best of `repeats` runs of fn, in ms (after one warm-up)."""
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return 1000 * best


def steps_child(a) -> dict:
    """The LLM decode step of B rows for every mode in one process, interleaved (a busy machine
    slows each mode alike): the --layers decoder layers per mode, the lm head (float in every
    mode) once, and from them `full_decode_tok_s_est` = B / (28 layers + lm head)."""
    import copy

    import torch
    from torch import nn

    sys.path.insert(0, str(BENCH))
    from fullrand import full_config

    from omni.config import OmniConfig
    from omni.model.decoder import CausalLM
    from omni.model.pool import KVPool, SlotCache
    from omni.model.rows import Row, decode_forward, decode_plan, linear
    from omni.quantized import quantize_modules

    if a.threads:
        torch.set_num_threads(a.threads)
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    cfg = OmniConfig.from_dict(full_config(a.layers))

    class Net(nn.Module):  # the `llm.` prefix quantize_modules expects
        def __init__(self, llm):
            super().__init__()
            self.llm = llm

    with torch.device("meta"):
        base = Net(CausalLM(cfg))
    base = base.to(torch.bfloat16).to_empty(device=a.device)
    with torch.no_grad():
        for name, p in base.named_parameters():
            p.fill_(1.0) if "norm" in name else p.normal_(0.0, 0.02)
    base.llm.model.init_buffers()
    c, head = cfg, base.llm.lm_head
    nets = {}
    for mode in a.modes.split(","):
        if mode == "bf16":
            nets[mode] = base
            continue
        with torch.device("meta"):
            net = Net(CausalLM(cfg))
        model = net.llm.model  # shares the embeddings, norm and head; the layers are its own
        model.embed_tokens, model.norm, net.llm.lm_head = base.llm.model.embed_tokens, base.llm.model.norm, head
        model.layers = copy.deepcopy(base.llm.model.layers)
        model.init_buffers()
        quantize_modules(net, mode, torch.bfloat16, a.device)
        nets[mode] = net
    layers_ms: dict = {m: {} for m in nets}
    head_ms: dict = {}
    with torch.inference_mode():
        for B in (1, 16):
            pool = KVPool(c.num_hidden_layers, B, c.num_key_value_heads, c.hidden_size // c.num_attention_heads, 512, torch.bfloat16, a.device)  # fmt: skip
            caches = [SlotCache(pool, i).reset() for i in range(B)]
            for cc in caches:  # a 256-position context each (the float model's keys serve every mode)
                base.llm.model(base.llm.embed(torch.randint(0, 1000, (1, 256), device=a.device)), cache=cc)
            x = base.llm.embed(torch.randint(0, 1000, (B,), device=a.device))
            d = decode_plan([Row(cc, 1, 256) for cc in caches], a.device)
            best = {m: float("inf") for m in nets}
            for _ in range(a.repeats):  # interleaved: each round times every mode once
                for m, net in nets.items():
                    best[m] = min(
                        best[m], timed(lambda net=net, x=x, d=d: decode_forward(net.llm.model, x, d), 1, sync)
                    )
            for m in nets:
                layers_ms[m][str(B)] = round(best[m], 1)
            head_ms[str(B)] = round(timed(lambda x=x: linear(head, x), a.repeats, sync), 1)
    est = {
        m: {B: round(1000 * int(B) / (ms * FULL_LAYERS / c.num_hidden_layers + head_ms[B]), 2) for B, ms in per.items()}
        for m, per in layers_ms.items()
    }
    return {"layers_ms": layers_ms, "lm_head_ms": head_ms, "full_decode_tok_s_est": est}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=2, help="every tower cut to this many layers")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--source", choices=["checkpoint", "random"], default="checkpoint",
                    help="checkpoint: write one, load it per mode (load figures); random: build in memory")  # fmt: skip
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--dir", help="checkpoint folder (kept, reused if complete); default: a temp dir, removed")
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--units", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: as each CPU model process runs)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    a = ap.parse_args()
    # what bench/engine.py's run_level reads
    a.slot_tokens, a.skip_speech, a.no_cuda_graphs, a.speech_s = 1024, True, False, 1.0
    if a.child:
        print(json.dumps(steps_child(a) if a.child == "steps" else child(a)))
        return
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(BENCH))
    ck = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="omni-quant-"))
    out: dict = {"bench": "quant", "device": a.device, "layers": a.layers, "source": a.source, "modes": {}}
    try:
        if a.source == "checkpoint":
            from fullrand import full_config

            from omni.embedded import write_sharded

            if not (ck / "model.safetensors.index.json").is_file():
                t = time.perf_counter()
                out["checkpoint_gb"] = round(write_sharded(ck, full_config(a.layers), random=True) / 1e9, 2)
                out["write_s"] = round(time.perf_counter() - t, 1)
        for mode in a.modes.split(","):
            args = [sys.executable, __file__, "--child", "1", "--mode", mode, "--ckpt", str(ck), "--layers", str(a.layers),
                    "--device", a.device, "--source", a.source, "--tokens", str(a.tokens), "--units", str(a.units),
                    "--repeats", str(a.repeats), "--threads", str(a.threads)]  # fmt: skip
            p = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
            if p.returncode != 0:
                out["modes"][mode] = {"error": (p.stderr.strip().splitlines() or ["?"])[-1][:300]}
                continue
            out["modes"][mode] = json.loads(p.stdout.strip().splitlines()[-1])
            print(json.dumps({mode: out["modes"][mode]}), file=sys.stderr)
        steps = [sys.executable, __file__, "--child", "steps", "--modes", a.modes, "--layers", str(a.layers),
                 "--device", a.device, "--repeats", str(a.repeats), "--threads", str(a.threads)]  # fmt: skip
        p = subprocess.run(steps, cwd=REPO, capture_output=True, text=True)
        if p.returncode == 0:
            out["decode_step"] = json.loads(p.stdout.strip().splitlines()[-1])
        else:
            out["decode_step"] = {"error": (p.stderr.strip().splitlines() or ["?"])[-1][:300]}
    finally:
        if not a.dir:
            shutil.rmtree(ck, ignore_errors=True)
    out["ratios"] = ratios(out["modes"])
    est = out.get("decode_step", {}).get("full_decode_tok_s_est", {})
    for mode, per in est.items():
        if mode != "bf16" and "bf16" in est and mode in out["ratios"]:
            out["ratios"][mode].update({f"full_decode_est_{B}": round(v / est["bf16"][B], 2) for B, v in per.items()})
    print(json.dumps(out))


def ratios(modes: dict) -> dict:
    base = modes.get("bf16", {})
    if "weight_gb" not in base:
        return {}
    r = {}
    for mode, m in modes.items():
        if mode == "bf16" or "weight_gb" not in m:
            continue
        r[mode] = {
            "weight": round(m["weight_gb"] / base["weight_gb"], 3),
            "llm_layers": round(m["llm_layers_gb"] / base["llm_layers_gb"], 3),
            "unit_ms": round(m["unit_ms"] / base["unit_ms"], 2),
            **{f"decode_tok_s_{k}": round(v / base["llm_decode_tok_s"][k], 2) for k, v in m["llm_decode_tok_s"].items()},
        }  # fmt: skip
    return r


if __name__ == "__main__":
    main()
