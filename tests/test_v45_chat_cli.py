"""`omni chat` on MiniCPM-V 4.5: the streamed reply equals the official stream's answer (golden),
a video file is read, packed and answered, flags a family lacks fail in one line naming it, and the
embedded tiny V-4.5 is deterministic (`omni serve` on it: tests/streaming/test_chat_v45.py)."""

import json

import av
import numpy as np

from omni.cli import main
from omni.golden.harness import GoldenDir


def test_chat_streams_the_official_answer(golden_v45_dir, capsys):
    cases = json.loads((golden_v45_dir / "cases.json").read_text())
    spec, rec = cases["meta"]["spec"], cases["chat_text_turn1_stream"]
    ckpt = GoldenDir(golden_v45_dir).checkpoint_dir()
    argv = ["chat", "--model", str(ckpt), "--system", spec["system_prompt"], "--text", spec["text_turns"][0]]
    argv += ["--max-new-tokens", str(rec["generate_kwargs"]["max_new_tokens"])]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert out.out == rec["answer"] + "\n"
    assert f"({len(rec['generated_ids'])} tokens in" in out.err


def _clip(path, n=20, fps=10):
    with av.open(str(path), "w") as c:
        s = c.add_stream("png", rate=fps)
        s.width, s.height, s.pix_fmt = 64, 48, "rgb24"
        for i in range(n):
            frame = np.full((48, 64, 3), (i * 12, 80, 255 - i * 12), np.uint8)
            for pkt in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def test_chat_answers_a_video_in_packs(tmp_path, capsys):
    _clip(tmp_path / "clip.avi")
    argv = ["chat", "--model", "embedded:minicpmv-4_5", "--video", str(tmp_path / "clip.avi")]
    argv += ["--fps", "3", "--pack", "3", "--think", "--max-new-tokens", "5"]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert out.out.startswith("<think>\n")
    assert "video: 6 frames of 2.0 s at 3 fps, 2 pack(s) of up to 3" in out.err
    assert main([*argv, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["text"].startswith("<think>\n") and len(res["ids"]) == 5


def test_flags_a_family_lacks_fail_in_one_line_naming_it(tmp_path, capsys):
    for extra, says in (
        (["--audio", "a.wav"], "MiniCPM-V 4.5 has no audio input"),
        (["--out-wav", "a.wav"], "MiniCPM-V 4.5 has no speech output"),
        (["--voice", "a.wav"], "MiniCPM-V 4.5 has no speech output"),
    ):
        assert main(["chat", "--model", "embedded:minicpmv-4_5", *extra]) == 2
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    (tmp_path / "bad.png").write_text("not an image")
    assert main(["chat", "--model", "embedded:minicpmv-4_5", "--image", str(tmp_path / "bad.png")]) == 2
    assert "is not a readable image" in capsys.readouterr().err
    assert main(["chat", "--model", "embedded:minicpmo-2_6", "--frames", str(tmp_path)]) == 2
    assert "MiniCPM-o 2.6 has no video input" in capsys.readouterr().err
    assert main(["chat", "--model", "embedded:nope"]) == 2
    assert "embedded:minicpmv-4_5" in capsys.readouterr().err


def test_the_embedded_v45_is_deterministic(tmp_path, monkeypatch):
    from omni.embedded import resolve_model
    from omni.loader import load

    dirs = []
    for name in ("a", "b"):
        monkeypatch.setenv("OMNI_CACHE", str(tmp_path / name))
        dirs.append(resolve_model("embedded:minicpmv-4_5"))
    assert (dirs[0] / "model.safetensors").read_bytes() == (dirs[1] / "model.safetensors").read_bytes()
    assert not (dirs[0] / "assets" / "Vocos.pt").exists()
    m = load(dirs[0], progress=False)
    assert m.family.key == "v-4.5" and "enable_thinking" in str(m.tokenizer.chat_template)  # Qwen3 template
