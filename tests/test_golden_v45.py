"""MiniCPM-V 4.5 golden parity: `omni golden-check` passes every case of tiny-v45-a (or the folder in
OMNI_GOLDEN_V45_DIR: every size, prompt and id is read from it) and fails on a corrupted one."""

import json
import shutil
import subprocess
import sys

from safetensors.torch import load_file, save_file


def test_golden_check_passes_every_v45_case(golden_v45_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "omni.cli", "golden-check", str(golden_v45_dir)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    print(proc.stdout[-6000:], proc.stderr[-3000:])
    assert proc.returncode == 0
    assert " 0 failed" in proc.stdout
    cases = [k for k in json.loads((golden_v45_dir / "cases.json").read_text()) if k not in ("meta", "inputs")]
    assert len(cases) >= 13  # processor, vision, video, video_sliced, llm and the chat cases
    for case in cases:
        assert f"PASS  {case} " in proc.stdout, case


def test_golden_check_fails_on_a_corrupted_v45_reference(golden_v45_dir, tiny_v45, tmp_path):
    from omni.golden.harness import GoldenDir, Report
    from omni.golden.v45 import video

    dst = tmp_path / "g"
    shutil.copytree(golden_v45_dir, dst)
    t = load_file(str(dst / "video.safetensors"))
    t["resampler_output"] = t["resampler_output"].clone()
    t["resampler_output"][-1, 0, 0] += 1e-3  # the last pack
    save_file(t, str(dst / "video.safetensors"))
    report = Report()
    video(GoldenDir(dst), tiny_v45, report)
    assert [r.name for r in report.rows if not r.passed] == ["resampler_output"]
