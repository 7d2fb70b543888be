"""The model's commands of `omni`: chat, keys, golden-check. The installed `omni` adds `serve`
(streaming/cli.py); with it, the only place that reads argv/env."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cmd_keys(a) -> int:
    from .embedded import read_model_config
    from .family import read_config
    from .loader import expected_shapes

    cfg = read_config(read_model_config(a.config))
    json.dump({k: list(v) for k, v in expected_shapes(cfg).items()}, sys.stdout, indent=1)
    print()
    return 0


def _cmd_golden(a) -> int:
    from .golden.run import main

    return main(a.folder, a.case or None)


def _load(a, ckpt: Path | None = None):
    import torch
    from .embedded import resolve_model
    from .loader import load

    ckpt = ckpt or resolve_model(a.model, getattr(a, "revision", None))
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[a.dtype]
    return load(ckpt, dtype=dtype, device=a.device, quantize=a.quantize)


def _cmd_chat(a) -> int:
    import time
    import numpy as np
    import soundfile as sf
    from PIL import Image
    from . import cli_v45
    from .chat import chat, read_voice_clip, with_voice
    from .embedded import resolve_model
    from .family import family_of_dir
    from .sampling import GREEDY, SamplingParams

    ckpt = resolve_model(a.model)
    family = family_of_dir(ckpt)
    cli_v45.check_flags(a, family)  # before the model loads: one line naming the family
    if family.prompt == "qwen3":
        return cli_v45.chat(a, lambda: _load(a, ckpt))
    ref = read_voice_clip(a.voice) if a.voice else None  # checked before the model loads
    if a.tools:
        from .tools.spec import choice_of, load_tools

        if ref is not None:
            raise ValueError("--tools and --voice cannot be combined (a tools turn speaks in the model's voice)")
        a.tools_list = load_tools(a.tools)  # also checked before the model loads
        choice_of(a.tools_list, a.tool_choice)
    m = _load(a, ckpt)
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
    if a.tools:
        return _chat_tools(a, m, content, sampling)
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


def _chat_tools(a, m, content: list, sampling) -> int:
    """One turn with function tools, through the streaming session (the server's path)."""
    import time
    import numpy as np
    import soundfile as sf
    from .session.engine import GenerateOptions, Session
    from .tools.calls import CallPiece
    from .tools.prompt import tools_section
    from .tools.spec import choice_of

    spec = choice_of(a.tools_list, a.tool_choice)
    s = Session(m, seed=a.seed)
    t = time.perf_counter()
    s.set_system("audio_assistant", None, None, tools_section(spec.tools))
    s.prefill({"role": "user", "content": content})
    opts = GenerateOptions(
        sampling=sampling, max_new_tokens=a.max_new_tokens, generate_audio=bool(a.out_wav), tools=spec
    )
    text, wavs, calls = "", [], {}
    for out in s.generate(opts):
        if isinstance(out, CallPiece):
            c = calls.setdefault(out.index, {"name": out.name, "arguments": "", "done": False})
            c["arguments"] += out.delta
            c["done"] = c["done"] or out.done
        else:
            text, wavs = text + out[0], wavs + [out[1]]
    result = {
        "text": text,
        "calls": [{"name": c["name"], "arguments": c["arguments"]} for c in calls.values() if c["done"]],
        "end": s.last_reply_end,
        "seconds": round(time.perf_counter() - t, 3),
    }
    print(json.dumps(result, ensure_ascii=False))
    if a.out_wav:
        wav = np.concatenate(wavs) if wavs else np.zeros(0, np.float32)
        sf.write(a.out_wav, wav, 24000)
        print(f"wrote {a.out_wav} ({len(wav) / 24000:.2f} s at 24 kHz)", file=sys.stderr)
    return 0


def _read_16k(path: str):
    import librosa

    audio, _ = librosa.load(path, sr=16000, mono=True)
    return audio


def _model_args(p):
    p.add_argument(
        "--model",
        help="checkpoint folder (MiniCPM-o 2.6 or MiniCPM-V 4.5 layout), hub id like openbmb/MiniCPM-o-2_6, or "
        "embedded:minicpmo-2_6 / embedded:minicpmv-4_5 (default: the embedded tiny MiniCPM-o 2.6)",
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
        description="MiniCPM-o 2.6 and MiniCPM-V 4.5: the realtime service (serve, MiniCPM-o 2.6), one "
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
    p.add_argument("--audio", action="append", help="audio file (any rate; resampled to 16 kHz; MiniCPM-o 2.6)")
    v = p.add_argument_group(
        "video and thinking (MiniCPM-V 4.5)",
        "A video is read as the model card's recipe does: --fps frames per second, one pack per frame "
        "while the clip fits in 180 frames, else up to 3 frames per pack (--pack forces 1-6); each pack "
        "becomes 64 tokens (query_num). The reply is streamed to stdout as it is decoded.",
    )
    v.add_argument("--video", help="a video file (any format PyAV/FFmpeg reads)")
    v.add_argument("--frames", metavar="DIR", help="a folder of frames (sorted by name) taken at --fps")
    v.add_argument("--fps", type=float, default=5.0, help="frames per second sampled from the video")
    v.add_argument(
        "--pack", type=int, choices=range(1, 7), metavar="N", help="frames per pack, 1-6 (None: the recipe's choice)"
    )
    v.add_argument("--think", action="store_true", help="thinking mode (the reply starts with <think>)")
    v.add_argument("--system", help="a system prompt (default: none, as the official chat)")
    v.add_argument("--json", action="store_true", help="print one JSON line at the end instead of streaming")
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
    p.add_argument(
        "--tools",
        metavar="FILE",
        help="function tools (a JSON list, realtime or chat shape): the turn runs as the server's "
        "does, its calls' arguments always valid for their schemas, and prints them",
    )
    p.add_argument(
        "--tool-choice",
        default="auto",
        help="with --tools: auto (the model decides), none, required (a call, first thing) or a tool's name",
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
