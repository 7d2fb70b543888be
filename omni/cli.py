"""The model's commands of `omni`: chat, keys, golden-check. The installed `omni` adds `serve`
(streaming/cli.py); with it, the only place that reads argv/env."""

from __future__ import annotations

import argparse
import json
import sys


def _cmd_keys(a) -> int:
    from .config import OmniConfig
    from .loader import expected_shapes
    from .embedded import read_model_config

    cfg = OmniConfig.from_dict(read_model_config(a.config))
    json.dump({k: list(v) for k, v in expected_shapes(cfg).items()}, sys.stdout, indent=1)
    print()
    return 0


def _cmd_golden(a) -> int:
    from .golden.run import main

    return main(a.folder, a.case or None)


def _load(a):
    import torch
    from .embedded import embedded_checkpoint
    from .loader import load

    from .hub import resolve

    ckpt = resolve(a.model, a.revision) if a.model else embedded_checkpoint()
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[a.dtype]
    return load(ckpt, dtype=dtype, device=a.device, quantize=a.quantize)


def _cmd_chat(a) -> int:
    import time
    import numpy as np
    import soundfile as sf
    from PIL import Image
    from .chat import chat, read_voice_clip, with_voice
    from .sampling import GREEDY, SamplingParams

    ref = read_voice_clip(a.voice) if a.voice else None  # checked before the model loads
    m = _load(a)
    content: list = []
    for p in a.image or []:
        content.append(Image.open(p).convert("RGB"))
    if a.text:
        content.append(a.text)
    for p in a.audio or []:
        content.append(_read_16k(p))
    if not content:
        content = ["Hello!"]
    sampling = SamplingParams() if a.sample else GREEDY
    msgs = [{"role": "user", "content": content}]
    if ref is not None:
        msgs = with_voice(msgs, ref)
    t = time.perf_counter()
    res = chat(m, msgs, max_new_tokens=a.max_new_tokens, sampling=sampling, seed=a.seed, generate_audio=bool(a.out_wav))
    print(
        json.dumps({"text": res.text, "ids": res.ids, "seconds": round(time.perf_counter() - t, 3)}, ensure_ascii=False)
    )
    if a.out_wav:
        assert res.wav_24k is not None  # generate_audio was on
        sf.write(a.out_wav, np.asarray(res.wav_24k, dtype=np.float32), 24000)
        print(f"wrote {a.out_wav} ({len(res.wav_24k) / 24000:.2f} s at 24 kHz)", file=sys.stderr)
    return 0


def _read_16k(path: str):
    import librosa

    audio, _ = librosa.load(path, sr=16000, mono=True)
    return audio


def _model_args(p):
    p.add_argument(
        "--model", help="checkpoint folder, or hub id like openbmb/MiniCPM-o-2_6 (default: the embedded tiny model)"
    )
    p.add_argument("--revision", help="hub ids: branch, tag or commit (default: main)")
    p.add_argument(
        "--quantize",
        choices=["int8", "int4"],
        help="quantize the LLM's linears of a bf16/fp32 checkpoint while loading (int4: 8-12 GB GPUs; int8: "
        "12-16 GB GPUs and CPUs)",
    )
    p.add_argument("--device", default="cpu", help="cpu, or cuda for the real model")
    p.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="weights' dtype (bfloat16 for the real model)",
    )


def build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The `omni` parser with the model's commands; streaming.cli adds `serve` (omni/ knows
    nothing of the service)."""
    ap = argparse.ArgumentParser(
        prog="omni",
        description="MiniCPM-o 2.6: the realtime service (serve), one "
        "offline turn (chat), and checkpoint tools (keys, golden-check). Without --model, "
        "every command uses the embedded tiny demo model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("keys", help="print the state-dict key -> shape map a config describes (JSON)")
    p.add_argument("config", help="config.json (official layout) or a TOML model config")
    p.set_defaults(fn=_cmd_keys)
    p = sub.add_parser("golden-check", help="replay a golden folder's cases against its checkpoint")
    p.add_argument("folder", help="a golden folder (cases.json + checkpoint files)")
    p.add_argument("--case", action="append", help="only this case (repeatable)")
    p.set_defaults(fn=_cmd_golden)
    p = sub.add_parser("chat", help="one offline chat turn", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _model_args(p)
    p.add_argument("--text", help="the user's text")
    p.add_argument("--image", action="append", help="an image file (repeatable)")
    p.add_argument("--audio", action="append", help="audio file (any rate; resampled to 16 kHz)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="reply length cap")
    p.add_argument("--sample", action="store_true", help="sample (top-p/top-k) instead of greedy")
    p.add_argument("--seed", type=int, help="seed of the text sampling and of the --out-wav speech (default: random)")
    p.add_argument("--out-wav", help="also synthesise speech into this 24 kHz WAV")
    p.add_argument(
        "--voice",
        metavar="PATH",
        help="clone this speaker's voice for the --out-wav speech: a 1-30 s clip soundfile reads "
        "(WAV, FLAC, OGG; any rate, resampled to 16 kHz), put in an audio_assistant system "
        "prompt (default: no system prompt, the model's own voice)",
    )
    p.set_defaults(fn=_cmd_chat)
    return ap, sub


def run(ap: argparse.ArgumentParser, argv=None) -> int:
    a = ap.parse_args(argv)
    try:
        return a.fn(a)
    except (FileNotFoundError, ValueError) as e:  # includes settings errors: one clear line
        print(f"omni {a.cmd}: error: {e}", file=sys.stderr)
        return 2


def main(argv=None) -> int:
    """The model's commands only (the installed `omni` command is streaming.cli:main, with serve)."""
    return run(build_parser()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
