"""The page's call state machine (web_client/state.js): its scripted-timeline tests in
web_client/state.test.mjs, and the MiniCPM-V 4.5 page's (family.js, speak.js, a call without audio)
in web_client/family.test.mjs, run with node's own test runner (no packages needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

WEB = Path(__file__).resolve().parents[1] / "web_client"
TESTS = [WEB / "state.test.mjs", WEB / "family.test.mjs"]
NODE = shutil.which("node")
# Without node this is skipped on a developer's machine, saying why; on CI (.ci/run sets OMNI_CI
# and installs node) it must run, so the same absence is a failure there.
if NODE is None and os.environ.get("OMNI_CI"):
    raise RuntimeError("CI must run the page's state tests: node is not installed")
if NODE is None:
    pytest.skip("node is not installed (the page's state tests need node >= 18)", allow_module_level=True)


def test_web_state_reducer():
    p = subprocess.run([NODE, "--test", *map(str, TESTS)], cwd=WEB, capture_output=True, text=True, timeout=60)
    summary = [line for line in p.stdout.splitlines() if line.startswith("# ")]
    assert p.returncode == 0, f"rc {p.returncode}\n{p.stdout[-6000:]}\n{p.stderr[-2000:]}"
    assert "# fail 0" in summary and any(line.startswith("# pass ") and line != "# pass 0" for line in summary), summary
