"""Validation helpers for client JSON: type checks and error messages in OpenAI's wording.

Every failure is a ProtocolError whose `param` is the dotted path the client sent."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection, Mapping
from typing import Any

from ..errors import ProtocolError

JSON_NAMES = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    dict: "an object",
    list: "an array",
    type(None): "null",
}


def bad(code: str, message: str, param: str | None) -> ProtocolError:
    return ProtocolError(code, message, param)


def as_type(v: Any, kind: type, p: str) -> Any:
    """Check a value against a JSON type: int is never bool, float accepts int."""
    if kind is float and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if not isinstance(v, kind) or (isinstance(v, bool) and kind is not bool):
        got = JSON_NAMES.get(type(v), type(v).__name__)
        raise bad("invalid_type", f"Invalid type for '{p}': expected {JSON_NAMES[kind]}, but got {got} instead.", p)
    return v


def get_field(obj: Mapping[str, Any], key: str, kind: type, path: str, required: bool = False) -> Any:
    """obj[key] type-checked; an absent or null optional field is None (as in OpenAI's API)."""
    p = f"{path}.{key}" if path else key
    if obj.get(key) is None and not required:
        return None
    if key not in obj:
        raise bad("missing_required_parameter", f"Missing required parameter: '{p}'.", p)
    return as_type(obj[key], kind, p)


def in_range(v: float, lo: float, hi: float, p: str) -> None:
    if not lo <= v <= hi:
        raise bad("invalid_value", f"Invalid value for '{p}': {v} is outside [{lo}, {hi}].", p)


def one_of(v: str, allowed: tuple[str, ...], p: str) -> str:
    if v not in allowed:
        raise bad(
            "invalid_value",
            f"Invalid value for '{p}': '{v}'. Supported values are: " + ", ".join(f"'{a}'" for a in allowed) + ".",
            p,
        )
    return v


def no_unknown(obj: Mapping[str, Any], allowed: Collection[str], path: str) -> None:
    """Unknown keys are errors, but a null one is absent (SDKs send every optional field, most null)."""
    for k, v in obj.items():
        if k not in allowed and v is not None:
            p = f"{path}.{k}" if path else k
            raise bad("unknown_parameter", f"Unknown parameter: '{p}'.", p)


def b64(v: str, p: str) -> bytes:
    """Decode base64 (a `data:...;base64,` prefix is allowed); empty payloads are an error."""
    if v.startswith("data:") and ";base64," in v:
        v = v.split(";base64,", 1)[1]
    try:
        data = base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError) as e:
        raise bad("invalid_value", f"Invalid base64 in '{p}': {e}.", p) from None
    if not data:
        raise bad("invalid_value", f"Invalid value for '{p}': the payload is empty.", p)
    return data
