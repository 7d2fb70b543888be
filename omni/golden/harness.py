"""Golden-check harness: reading a golden folder and recording per-tensor comparisons.

Owns: `GoldenDir` (lazy access to cases.json and the case safetensors of one folder, with the
xz-compressed files transparently decompressed into a cache) and `Report` (one row per compared
quantity, max abs error, tolerance, PASS/FAIL). Does not own: any model code or any knowledge of a
particular folder's values; every size is read from the files.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

# Suggested tolerances of the golden README §5.
ATOL_FLOAT = 1e-4
RTOL_FLOAT = 1e-4
ATOL_LOGITS = 2e-4
ATOL_WAV = 1e-4


def _cache_root() -> Path:
    return Path(os.environ.get("OMNI_CACHE", Path.home() / ".cache" / "omni"))


@dataclass
class GoldenDir:
    """One golden folder laid out like a checkpoint plus case files (golden README §1)."""

    path: Path
    _tensors: dict = field(default_factory=dict)

    def __post_init__(self):
        self.path = Path(self.path)
        if not (self.path / "cases.json").is_file():
            raise FileNotFoundError(f"{self.path} has no cases.json: not a golden folder")
        self.cases = json.loads((self.path / "cases.json").read_text())

    def case(self, name: str) -> dict[str, torch.Tensor]:
        """Tensors of `<name>.safetensors` (loaded once)."""
        if name not in self._tensors:
            self._tensors[name] = load_file(str(self.path / f"{name}.safetensors"))
        return self._tensors[name]

    def has_case(self, name: str) -> bool:
        return (self.path / f"{name}.safetensors").is_file()

    def checkpoint_dir(self) -> Path:
        """A directory usable as a checkpoint: the folder itself, or a cache copy with the
        `.xz` files decompressed (verified against MANIFEST.json when it lists them)."""
        xz = sorted(self.path.rglob("*.xz"))
        if not xz:
            return self.path
        manifest = {}
        if (self.path / "MANIFEST.json").is_file():
            manifest = json.loads((self.path / "MANIFEST.json").read_text())
        key = hashlib.sha256(str(self.path.resolve()).encode()).hexdigest()[:16]
        out = _cache_root() / "golden" / key
        for src in self.path.rglob("*"):
            rel = src.relative_to(self.path)
            if src.is_dir():
                (out / rel).mkdir(parents=True, exist_ok=True)
                continue
            if src.suffix == ".xz":
                dst = out / rel.with_suffix("")
                want = manifest.get(str(rel.with_suffix("")), {}).get("sha256")
                if dst.is_file() and (want is None or _sha256(dst) == want):
                    continue
                dst.parent.mkdir(parents=True, exist_ok=True)
                data = lzma.decompress(src.read_bytes())
                if want is not None and hashlib.sha256(data).hexdigest() != want:
                    raise ValueError(f"{src}: decompressed bytes do not match MANIFEST.json")
                tmp = dst.with_suffix(dst.suffix + ".tmp")
                tmp.write_bytes(data)
                tmp.replace(dst)
            else:
                dst = out / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                if (
                    not dst.exists()
                    or dst.stat().st_size != src.stat().st_size
                    or dst.stat().st_mtime < src.stat().st_mtime
                ):
                    dst.write_bytes(src.read_bytes())
        return out


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Row:
    case: str
    name: str
    max_abs_err: float
    tol: float
    passed: bool
    detail: str = ""


class Report:
    """Collects comparisons; `rows` keeps every check in order."""

    def __init__(self, echo=None):
        self.rows: list[Row] = []
        self.case_name = ""
        self.echo = echo

    def _add(self, row: Row):
        self.rows.append(row)
        if self.echo:
            self.echo(format_row(row))

    def compare(self, name: str, got, want, atol: float = ATOL_FLOAT, rtol: float = RTOL_FLOAT):
        """Float comparison: |got - want| <= atol + rtol * |want| elementwise."""
        got_t, want_t = _as_tensor(got).double(), _as_tensor(want).double()
        if tuple(got_t.shape) != tuple(want_t.shape):
            self._add(
                Row(
                    self.case_name,
                    name,
                    float("inf"),
                    atol,
                    False,
                    f"shape {tuple(got_t.shape)} != {tuple(want_t.shape)}",
                )
            )
            return False
        err = (got_t - want_t).abs()
        max_err = float(err.max()) if err.numel() else 0.0
        ok = bool((err <= atol + rtol * want_t.abs()).all()) if err.numel() else True
        self._add(Row(self.case_name, name, max_err, atol, ok))
        return ok

    def equal(self, name: str, got, want):
        """Exact comparison for ids, codes, bounds and strings."""
        if isinstance(want, (str, list, tuple, int)) and not isinstance(want, torch.Tensor):
            ok = got == want
            detail = "" if ok else f"got {got!r:.200} want {want!r:.200}"
            self._add(Row(self.case_name, name, 0.0 if ok else float("inf"), 0.0, ok, detail))
            return ok
        got_t, want_t = _as_tensor(got).long(), _as_tensor(want).long()
        if tuple(got_t.shape) != tuple(want_t.shape):
            self._add(
                Row(
                    self.case_name,
                    name,
                    float("inf"),
                    0.0,
                    False,
                    f"shape {tuple(got_t.shape)} != {tuple(want_t.shape)}",
                )
            )
            return False
        diff = got_t != want_t
        n = int(diff.sum())
        err = float((got_t - want_t).abs().max()) if got_t.numel() else 0.0
        detail = f"{n} of {got_t.numel()} differ" if n else ""
        self._add(Row(self.case_name, name, err, 0.0, n == 0, detail))
        return n == 0

    def fail(self, name: str, detail: str):
        self._add(Row(self.case_name, name, float("inf"), 0.0, False, detail))

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows) and bool(self.rows)


def _as_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    return torch.as_tensor(np.asarray(x))


def format_row(r: Row) -> str:
    status = "PASS" if r.passed else "FAIL"
    extra = f"  ({r.detail})" if r.detail else ""
    return f"{status}  {r.case:<12} {r.name:<48} max_abs_err={r.max_abs_err:.3g} tol={r.tol:g}{extra}"
