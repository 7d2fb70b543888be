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


GOLDEN_V45 = Path(os.environ.get("OMNI_GOLDEN_V45_DIR", REPO / "tests" / "assets" / "golden" / "tiny-v45-a"))


@pytest.fixture(scope="session")
def golden_v45_dir() -> Path:
    """The MiniCPM-V 4.5 golden folder (another with other shapes and seed: OMNI_GOLDEN_V45_DIR)."""
    assert (GOLDEN_V45 / "cases.json").is_file(), f"golden folder missing at {GOLDEN_V45}"
    return GOLDEN_V45


@pytest.fixture(scope="session")
def tiny_v45(golden_v45_dir):
    """The golden tiny-v45-a checkpoint, loaded once (float32, CPU)."""
    from omni.golden.harness import GoldenDir
    from omni.loader import load

    return load(GoldenDir(golden_v45_dir).checkpoint_dir(), progress=False)


@pytest.fixture(scope="session")
def embedded_dir() -> Path:
    from omni.embedded import embedded_checkpoint

    return embedded_checkpoint()


# ---- every server event the suite makes, checked against the `openai` SDK's realtime types
# The builders in streaming.gateway.events all go through `server_event`; a recorder wraps it for
# the whole run (in-process servers), and the session fails if any OpenAI-typed event does not
# validate. A few of each type are kept (audio deltas would be thousands).
KEEP_PER_TYPE = 200
_events: dict[str, list[dict]] = {}


@pytest.fixture(autouse=True, scope="session")
def _record_server_events():
    import copy
    from streaming.gateway import events

    real = events.server_event

    def record(event_type, /, **fields):
        ev = real(event_type, **fields)
        kept = _events.setdefault(event_type, [])
        if len(kept) < KEEP_PER_TYPE:
            kept.append(copy.deepcopy(ev))
        return ev

    events.server_event = record
    yield
    events.server_event = real


def pytest_sessionfinish(session, exitstatus):
    if not _events:
        return
    from event_types import openai_type_errors

    kept = [ev for evs in _events.values() for ev in evs]
    bad = openai_type_errors(kept)
    print(f"\nchecked {len(kept)} server events of {len(_events)} types against the openai SDK's types")
    if bad:
        print(f"\n{len(bad)} server event(s) the openai SDK's types reject:\n  " + "\n  ".join(bad[:20]))
        session.exitstatus = 1
