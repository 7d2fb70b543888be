"""The golden checker passes every case of the folder shipped in tests/assets (and fails loudly)."""

import subprocess
import sys


def test_golden_check_passes_every_case(golden_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "omni.cli", "golden-check", str(golden_dir)],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    print(proc.stdout[-6000:], proc.stderr[-3000:])
    assert proc.returncode == 0
    assert " 0 failed" in proc.stdout
    for case in ("vision", "audio", "chat", "tts_decode", "voice_clone"):
        assert f"PASS  {case}" in proc.stdout


def test_golden_check_fails_on_a_corrupted_reference(golden_dir, tmp_path):
    import shutil
    from safetensors.torch import load_file, save_file

    dst = tmp_path / "g"
    shutil.copytree(golden_dir, dst)
    t = load_file(str(dst / "chat.safetensors"))
    t["generated_ids"] = t["generated_ids"].clone()
    t["generated_ids"][0] += 1
    save_file(t, str(dst / "chat.safetensors"))
    proc = subprocess.run(
        [sys.executable, "-m", "omni.cli", "golden-check", str(dst), "--case", "chat"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1
    assert "FAIL  chat" in proc.stdout and "generated_ids" in proc.stdout
