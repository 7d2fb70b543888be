"""`--model org/name` (omni/hub.py) against a Hugging Face cache folder the test builds (the layout
huggingface_hub reads: refs/<revision> -> snapshots/<commit>/): a local folder wins, a cached id
loads offline, an uncached one gives one line saying what to run; never touches the network."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from omni.hub import HubError, is_hub_id, resolve

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def cache(embedded_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("hf-cache")
    repo = root / "models--tiny-org--tiny"
    shutil.copytree(embedded_dir, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)  # no newline, as huggingface_hub writes it
    return root


def test_a_cached_hub_id_resolves_offline_to_its_snapshot_and_loads(cache):
    from omni.loader import load

    snap = cache / "models--tiny-org--tiny" / "snapshots" / COMMIT
    assert resolve("tiny-org/tiny", cache_dir=cache, offline=True) == snap
    assert resolve("tiny-org/tiny", revision=COMMIT, cache_dir=cache, offline=True) == snap
    m = load(resolve("tiny-org/tiny", cache_dir=cache, offline=True), progress=False, quantize="int8")
    assert m.checkpoint_dir == snap and m.weights is not None and m.weights["kernel"] == "int8pack"


def test_a_local_folder_wins_over_a_hub_id_of_the_same_name(cache, embedded_dir, tmp_path, monkeypatch):
    local = tmp_path / "tiny-org" / "tiny"
    shutil.copytree(embedded_dir, local)
    monkeypatch.chdir(tmp_path)
    assert is_hub_id("tiny-org/tiny") and not is_hub_id("./tiny-org/tiny") and not is_hub_id("/abs/dir")
    assert resolve("tiny-org/tiny", cache_dir=cache, offline=True).resolve() == local.resolve()
    with pytest.raises(HubError, match="--revision v1 is for hub ids"):
        resolve("tiny-org/tiny", revision="v1")
    with pytest.raises(FileNotFoundError, match="no such checkpoint folder"):
        resolve("./not-here")


def test_offline_and_not_cached_says_in_one_line_what_to_run(cache):
    with pytest.raises(HubError) as e:
        resolve("openbmb/MiniCPM-o-2_6", cache_dir=cache, offline=True)
    msg = str(e.value)
    assert "\n" not in msg and "not in the Hugging Face cache" in msg and "`hf download openbmb/MiniCPM-o-2_6`" in msg
    with pytest.raises(HubError, match="`hf download tiny-org/tiny --revision v2`"):
        resolve("tiny-org/tiny", revision="v2", cache_dir=cache, offline=True)


def test_the_cli_takes_a_hub_id_with_hf_hub_offline(cache):
    """As a user runs it: HF_HUB_CACHE and HF_HUB_OFFLINE=1 in the environment, read by
    huggingface_hub at import; the cached id chats with --quantize int4."""
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "omni.cli", "chat", "--text", "hi", "--max-new-tokens", "2"]
    ok = subprocess.run([*cmd, "--model", "tiny-org/tiny", "--quantize", "int4"], env=env, capture_output=True, text=True)  # fmt: skip
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert len(json.loads(ok.stdout.strip().splitlines()[-1])["ids"]) <= 2


def test_the_cli_names_the_command_to_run_for_an_uncached_id(cache, monkeypatch, capsys):
    from huggingface_hub import constants

    from omni.cli import main

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    assert main(["chat", "--model", "tiny-org/absent", "--text", "hi"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"omni chat: error: tiny-org/absent is not in the Hugging Face cache ({cache}) and downloads are off "
        "(HF_HUB_OFFLINE): run `hf download tiny-org/absent` where the hub is reachable (or pass a local folder)"
    ]
