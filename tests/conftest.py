import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
GOLDEN = Path(os.environ.get("OMNI_GOLDEN_DIR", REPO / "tests" / "assets" / "golden" / "tiny-a"))


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    assert (GOLDEN / "cases.json").is_file(), f"golden folder missing at {GOLDEN}"
    return GOLDEN


@pytest.fixture(scope="session")
def tiny():
    """The golden tiny-a checkpoint, loaded once (float32, CPU)."""
    from omni.golden.harness import GoldenDir
    from omni.loader import load
    return load(GoldenDir(GOLDEN).checkpoint_dir(), progress=False)


@pytest.fixture(scope="session")
def embedded_dir() -> Path:
    from omni.embedded import embedded_checkpoint
    return embedded_checkpoint()
