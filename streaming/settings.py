"""Server settings: one frozen dataclass, read from TOML whose keys are the field names.

Owns: `ServerSettings` (defaults and range checks), `load_settings` (TOML file + command-line
overrides, unknown keys are an error) and `dump_settings` (the inverse, for round trips and
`configs/server.toml`). Does not own: per-session options (protocol.SessionConfig, set by the
client) or reading argv/env (the entry point does that and passes overrides in).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

DTYPES = ("bfloat16", "float16", "float32")
WORKERS = ("auto", "processes", "threads", "ray")
QUANTIZE = ("int8", "int4")


class SettingsError(ValueError):
    """A settings file or override that names an unknown key or holds a bad value."""


@dataclass(frozen=True)
class ServerSettings:
    """Everything the operator sets; see configs/server.toml for the documented defaults."""

    host: str = "127.0.0.1"
    port: int = 8000
    model: str | None = None  # checkpoint folder or hub id (org/name); None = the embedded tiny model
    revision: str | None = None  # hub ids: a branch, tag or commit; None = main
    quantize: str | None = None  # "int8" or "int4": quantize the LLM's linears of a bf16/fp32 checkpoint at load
    device: str = "cpu"  # matches `omni chat`; the real model wants "cuda" + "bfloat16"
    dtype: str = "float32"
    max_sessions: int = 16  # sessions share one model; the worker interleaves their steps
    idle_timeout_s: float = 300.0
    header_timeout_s: float = 15.0  # a connection that sends no complete request (headers) in this long is closed
    max_message_bytes: int = 4 * 1024 * 1024  # a 30 s PCM16 reference clip is ~1.9 MB base64
    max_image_pixels: int = 1920 * 1080
    api_key: str | None = None  # None = open server (fine on localhost only)
    allowed_origins: str | None = None  # browser pages that may open sessions: comma-separated origins or "*";
    # None = the server's own (its host and port, localhost, 127.0.0.1)
    max_item_tokens: int = 4096  # the longest text a conversation.item.create may carry, in LLM tokens
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_self_signed: bool = False  # iPad/Safari need HTTPS for the microphone even on a LAN
    static_dir: str | None = None  # None = the bundled web client
    vad_threshold: float = 0.5  # OpenAI server_vad defaults
    vad_prefix_padding_ms: int = 300
    vad_silence_duration_ms: int = 500
    max_reply_tokens: int = 512
    max_speech_s: float = 60.0
    model_lanes: int = 0  # batch engines; 0 = auto: one per core on CPU, 1 on GPU
    worker: str = (
        "auto"  # "processes" (an engine and a model copy per lane), "threads", or auto: processes on a CPU with >1 lane
    )
    max_batch: int = 32  # the most sessions' ops in one batched forward; 1 = every op alone (batching off)
    kv_cache_gb: float = 0.0  # KV pool memory per engine; 0 = auto (CUDA: what is free after loading)
    cuda_graphs: bool = True  # CUDA: the LLM token and TTS frame steps replay captured graphs
    ray_address: str | None = None  # worker "ray": the cluster to join; None = start a local one
    ray_replicas: int = 0  # worker "ray": engine replicas; 0 = one per GPU (device cuda) or per CPU core
    ray_lease_s: float = 10.0  # worker "ray": a gateway silent this long loses its sessions on the replicas
    ray_max_restarts: int = 5  # worker "ray": how often Ray restarts a replica that died
    memory_gb: float = 0.0  # CPU: memory the model copies and KV pools may use; 0 = what is available at start
    model_step_timeout_s: float = 60.0  # processes: a model process silent this long over one step is replaced
    max_context_tokens: int = 8192  # LLM cache budget; oldest complete turns slide out (system prompt kept)

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), str(f.type))
            if f.type == "float":  # TOML `300` for a float field: keep the declared type
                object.__setattr__(self, f.name, float(getattr(self, f.name)))
        checks = [
            (0 <= self.port <= 65_535, "port must be 0..65535"),
            (self.dtype in DTYPES, f"dtype must be one of {', '.join(DTYPES)}"),
            (self.quantize in (None, *QUANTIZE), f"quantize must be one of {', '.join(QUANTIZE)} (or unset)"),
            (self.max_sessions >= 1, "max_sessions must be at least 1"),
            (self.idle_timeout_s > 0, "idle_timeout_s must be positive"),
            (self.header_timeout_s > 0, "header_timeout_s must be positive"),
            (self.max_message_bytes >= 1024, "max_message_bytes must be at least 1024"),
            (self.max_image_pixels >= 64 * 64, "max_image_pixels must be at least 4096"),
            ((self.tls_cert is None) == (self.tls_key is None), "tls_cert and tls_key must be given together"),
            (not (self.tls_self_signed and self.tls_cert), "tls_self_signed excludes tls_cert"),
            (0.0 <= self.vad_threshold <= 1.0, "vad_threshold must be 0..1"),
            (self.vad_prefix_padding_ms >= 0, "vad_prefix_padding_ms must be >= 0"),
            (self.vad_silence_duration_ms > 0, "vad_silence_duration_ms must be positive"),
            (self.max_reply_tokens >= 1, "max_reply_tokens must be at least 1"),
            (self.max_speech_s > 0, "max_speech_s must be positive"),
            (self.model_lanes >= 0, "model_lanes must be >= 0 (0 = auto)"),
            (self.max_batch >= 1, "max_batch must be at least 1"),
            (self.ray_replicas >= 0, "ray_replicas must be >= 0 (0 = auto)"),
            (self.ray_lease_s > 0, "ray_lease_s must be positive"),
            (self.ray_max_restarts >= -1, "ray_max_restarts must be >= -1 (-1 = always)"),
            (self.kv_cache_gb >= 0, "kv_cache_gb must be >= 0 (0 = auto)"),
            (self.memory_gb >= 0, "memory_gb must be >= 0 (0 = what is available)"),
            (self.worker in WORKERS, f"worker must be one of {', '.join(WORKERS)}"),
            (self.model_step_timeout_s > 0, "model_step_timeout_s must be positive"),
            (self.max_context_tokens >= 512, "max_context_tokens must be at least 512"),
            (1 <= self.max_item_tokens <= self.max_context_tokens, "max_item_tokens must be 1..max_context_tokens"),
        ]
        bad = [msg for ok, msg in checks if not ok]
        if bad:
            raise SettingsError("invalid server settings: " + "; ".join(bad))

    @property
    def lanes(self) -> int:
        return self.model_lanes or auto_lanes(self.device)

    @property
    def worker_kind(self) -> str:
        """ "processes" or "threads" (`worker` with auto resolved)."""
        if self.worker != "auto":
            return self.worker
        return "processes" if self.device.startswith("cpu") and self.lanes > 1 else "threads"

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None or self.tls_self_signed

    @property
    def origins(self) -> tuple[str, ...] | None:
        """`allowed_origins` as a tuple (None: the server's own origins)."""
        if self.allowed_origins is None:
            return None
        return tuple(o.strip() for o in self.allowed_origins.split(",") if o.strip())


def auto_lanes(device: str) -> int:
    """Batch engines: on a CPU one per core (each single-threaded, in its own process by default);
    on a GPU one (it batches every session itself)."""
    if device.startswith("cpu"):
        return max(1, min(4, os.cpu_count() or 1))
    return 1


_KINDS: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}


def _check_type(name: str, value: Any, annotation: str) -> None:
    # Annotations are strings under `from __future__ import annotations`: "int", "str | None".
    parts = [p.strip() for p in annotation.split("|")]
    if value is None and "None" in parts:
        return
    kinds = tuple(k for p in parts for k in _KINDS.get(p, ()))
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        raise SettingsError(f"setting {name!r} must be {annotation}, got {value!r}")


def _unknown(keys: set[str], source: str) -> None:
    names = [f.name for f in fields(ServerSettings)]
    bad = sorted(keys - set(names))
    if bad:
        hints = [
            f"{k!r}" + (f" (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, names, n=1)) else "")
            for k in bad
        ]
        raise SettingsError(f"unknown setting(s) in {source}: {', '.join(hints)}; known settings: {', '.join(names)}")


def load_settings(toml_path: str | Path | None = None, **cli_overrides: Any) -> ServerSettings:
    """Defaults, then the TOML file, then command-line overrides (a None override means unset).

    Raises:
        SettingsError: unknown key, wrong type or out-of-range value, naming the key and source.
        FileNotFoundError: `toml_path` does not exist.
    """
    values: dict[str, Any] = {}
    if toml_path is not None:
        with open(toml_path, "rb") as fh:
            try:
                values = tomllib.load(fh)
            except tomllib.TOMLDecodeError as e:
                raise SettingsError(f"{toml_path}: invalid TOML: {e}") from None
        _unknown(set(values), str(toml_path))
    overrides = {k: v for k, v in cli_overrides.items() if v is not None}
    _unknown(set(overrides), "command-line overrides")
    return ServerSettings(**{**values, **overrides})


def dump_settings(settings: ServerSettings) -> str:
    """TOML text that `load_settings` reads back to an equal object (None fields are omitted)."""
    lines = []
    for key, value in dataclasses.asdict(settings).items():
        if value is not None:  # TOML has no null; an absent key means the default None
            # JSON string escapes are valid TOML basic-string escapes.
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"
