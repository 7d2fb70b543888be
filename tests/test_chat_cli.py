"""`omni chat --voice`: a voice-clone clip in the offline turn (embedded tiny model, no mocks).

The reply WAVs come from the real CLI (in-process `omni.cli.main`, so the model is the embedded
one and loads in well under a second after the first build); the error cases run the CLI as a
subprocess to see its exit status and stderr as a user would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from omni import cli
from omni.chat import MAX_REFERENCE_S, MIN_REFERENCE_S, chat, read_voice_clip
from omni.processing import prompt as P

REPO = Path(__file__).resolve().parent.parent
VOICE = REPO / "tests" / "assets" / "speech" / "voice_ref.wav"  # ~8.3 s, 24 kHz mono
TURN = ["--text", "Say hello.", "--max-new-tokens", "2", "--seed", "7"]


def _chat_wav(tmp_path: Path, name: str, *extra: str) -> np.ndarray:
    out = tmp_path / name
    assert cli.main(["chat", *TURN, "--out-wav", str(out), *extra]) == 0
    wav, rate = sf.read(out, dtype="float32")
    assert rate == 24000 and wav.ndim == 1 and len(wav) > 0
    return wav


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "omni.cli", "chat", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_voice_clip_reads_like_librosa():
    import librosa

    ref = read_voice_clip(VOICE)
    want, _ = librosa.load(VOICE, sr=16000, mono=True)  # the `--audio` path's reader
    assert ref.dtype == np.float32 and np.array_equal(ref, want)
    assert MIN_REFERENCE_S <= len(ref) / 16000 <= MAX_REFERENCE_S


def test_chat_voice_clones_the_reply(tmp_path, embedded_dir):
    plain = _chat_wav(tmp_path, "plain.wav")
    again = _chat_wav(tmp_path, "again.wav")
    assert np.array_equal(plain, again), "a seeded reply's speech must be reproducible"
    cloned = _chat_wav(tmp_path, "cloned.wav", "--voice", str(VOICE))
    assert not (len(cloned) == len(plain) and np.allclose(cloned, plain)), "--voice changed nothing"

    # The library path: the reference in an audio_assistant system prompt (spec §3.4), as the
    # streaming session's set_system builds it, ahead of the same user turn and seed.
    import librosa
    from omni.loader import load

    m = load(embedded_dir, progress=False)
    ref, _ = librosa.load(VOICE, sr=16000, mono=True)
    msgs = [P.sys_prompt("audio_assistant", ref), {"role": "user", "content": ["Say hello."]}]
    res = chat(m, msgs, max_new_tokens=2, seed=7, generate_audio=True)
    want = res.wav_24k.astype(np.float32)
    # The CLI's WAV is float32 written as PCM16, so compare after the same quantisation.
    sf.write(tmp_path / "lib.wav", want, 24000)
    lib, _ = sf.read(tmp_path / "lib.wav", dtype="float32")
    assert np.array_equal(cloned, lib)


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda d: d / "missing.wav", "does not exist"),
        (lambda d: (d / "notes.wav").write_text("not audio at all") and d / "notes.wav", "not a readable audio file"),
        (lambda d: sf.write(d / "short.wav", np.zeros(4000, np.float32), 16000) or d / "short.wav", "0.25 s long"),
        (lambda d: sf.write(d / "long.flac", np.zeros(31 * 8000, np.float32), 8000) or d / "long.flac", "31.00 s long"),
    ],
    ids=["missing", "not-audio", "too-short", "too-long"],
)
def test_chat_voice_bad_clip_is_one_clear_line(tmp_path, make, words):
    path = make(tmp_path)
    r = _run_cli("--text", "hi", "--max-new-tokens", "1", "--voice", str(path), "--out-wav", str(tmp_path / "o.wav"))
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("omni chat: error: voice clip") and words in lines[0] and str(path) in lines[0]
    assert not (tmp_path / "o.wav").exists()


TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The weather forecast.",
        "parameters": {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}}, "required": ["city"]},
    },
    {"type": "function", "function": {"name": "get_time", "description": "The time now."}},  # the chat shape
]


def test_chat_tools_prints_the_call(tmp_path, embedded_dir, capsys):
    path = tmp_path / "tools.json"
    path.write_text(json.dumps(TOOLS))
    assert cli.main(["chat", *TURN, "--tools", str(path), "--tool-choice", "get_weather"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["text"] == "" and out["end"] == "eos"
    (call,) = out["calls"]
    assert call["name"] == "get_weather" and json.loads(call["arguments"])["city"] in ("Paris", "Rome")
    assert cli.main(["chat", *TURN, "--tools", str(path), "--tool-choice", "none"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["calls"] == []


@pytest.mark.parametrize(
    "tools, choice, words",
    [
        ([{"type": "function", "name": "bad name"}], "auto", "needs a name"),
        ([{"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "strin"}}}}], "auto", "strin"),
        (TOOLS, "get_nothing", "neither auto"),
        ({"tools": []}, "auto", "non-empty list"),
    ],
)
def test_chat_tools_bad_file_or_choice_is_one_clear_line(tmp_path, capsys, tools, choice, words):
    path = tmp_path / "tools.json"
    path.write_text(json.dumps(tools))
    assert cli.main(["chat", "--text", "hi", "--tools", str(path), "--tool-choice", choice]) == 2
    err = capsys.readouterr().err
    assert words in err and "loading" not in err, err  # refused before the model loads


def test_chat_tools_error_as_a_user_sees_it(tmp_path):
    p = _run_cli("--text", "hi", "--tools", str(tmp_path / "missing.json"))
    assert p.returncode == 2 and "does not exist" in p.stderr and "Traceback" not in p.stderr, p.stderr
