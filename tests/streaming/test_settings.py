"""Server settings: TOML keys are the dataclass fields, round trips are exact, mistakes are loud."""

from __future__ import annotations

from pathlib import Path

import pytest

from streaming.settings import ServerSettings, SettingsError, dump_settings, load_settings

REPO = Path(__file__).resolve().parents[2]


def test_toml_round_trip(tmp_path: Path) -> None:
    custom = ServerSettings(
        host="0.0.0.0",
        port=8443,
        model='/models/Mini "CPM" ö',
        device="cuda",
        dtype="bfloat16",
        max_sessions=4,
        idle_timeout_s=30,
        api_key="k3y",
        tls_cert="c.pem",
        tls_key="k.pem",
        static_dir="web",
        vad_threshold=0.6,
        vad_silence_duration_ms=700,
        max_speech_s=12.5,
    )
    path = tmp_path / "server.toml"
    path.write_text(dump_settings(custom), encoding="utf-8")
    assert load_settings(path) == custom
    assert load_settings(path).idle_timeout_s == 30.0  # an int in TOML lands as the float field


def test_shipped_config_documents_the_defaults() -> None:
    assert load_settings(REPO / "configs" / "server.toml") == ServerSettings()


def test_no_file_gives_defaults_and_overrides_win(tmp_path: Path) -> None:
    assert load_settings() == ServerSettings()
    path = tmp_path / "s.toml"
    path.write_text('port = 9000\nhost = "0.0.0.0"\n')
    s = load_settings(path, port=9100, host=None)  # None: flag not given, the file wins
    assert (s.port, s.host) == (9100, "0.0.0.0")


def test_unknown_key_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("prot = 1\n")
    with pytest.raises(SettingsError, match=r"unknown setting.*'prot' \(did you mean 'port'\?\)"):
        load_settings(path)
    with pytest.raises(SettingsError, match="command-line overrides"):
        load_settings(None, portt=1)


@pytest.mark.parametrize(
    "text,words",
    [
        ('port = "8000"\n', "'port' must be int"),
        ("tls_self_signed = 1\n", "'tls_self_signed' must be bool"),
        ("max_sessions = 0\n", "max_sessions must be at least 1"),
        ('tls_cert = "c.pem"\n', "tls_cert and tls_key must be given together"),
        ('dtype = "fp8"\n', "dtype must be one of"),
        ("vad_threshold = 1.5\n", "vad_threshold must be 0..1"),
        ("port = [\n", "invalid TOML"),
        ('worker = "fork"\n', "worker must be one of auto, processes, threads"),
    ],
)
def test_bad_values_are_clear_errors(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(SettingsError, match=words.replace("(", r"\(")):
        load_settings(path)


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        ServerSettings().port = 1  # type: ignore[misc]


def test_auto_worker_is_processes_on_a_multi_lane_cpu_only() -> None:
    assert ServerSettings(device="cpu", model_lanes=2).worker_kind == "processes"
    assert ServerSettings(device="cpu", model_lanes=1).worker_kind == "threads"
    assert ServerSettings(device="cuda").worker_kind == "threads"  # one lane on a GPU
    assert ServerSettings(device="cpu", model_lanes=2, worker="threads").worker_kind == "threads"
