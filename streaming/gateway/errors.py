"""Typed errors at the service edge, and the one place that turns any exception into wire form.

Owns: the domain exceptions the gateway raises (each carrying an OpenAI error `type` and `code`),
`to_error_event` (exception -> `error` server event) and `close_code` (exception -> WebSocket close
code, or None to keep the connection open). Does not own: sending, logging policy beyond the one
log line for unexpected errors, or deciding when to raise.

The error object follows the OpenAI Realtime shape:
`{"type": "error", "event_id": ..., "error": {"type", "code", "message", "param", "event_id"}}`,
where `error.event_id` names the *client* event that caused it.
"""
from __future__ import annotations

import logging
import secrets
from typing import Any, ClassVar

from .events import error   # events.py imports nothing from here: no cycle

log = logging.getLogger(__name__)

# RFC 6455 §7.4.1 codes; 1013 is the IANA-registered "Try Again Later".
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001  # server shutdown or idle timeout
CLOSE_POLICY_VIOLATION = 1008  # bad or missing API key
CLOSE_MESSAGE_TOO_BIG = 1009  # sent by the transport when a frame exceeds max_message_bytes
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013  # every session slot is taken


class OmniError(Exception):
    """Base of the typed edge errors: an OpenAI error `type`, a `code`, a message and the param."""

    error_type: ClassVar[str] = "server_error"
    close_code: ClassVar[int | None] = None  # None: report and keep the connection open

    def __init__(self, code: str, message: str, param: str | None = None,
                 event_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.event_id = event_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r}, param={self.param!r})"


class ProtocolError(OmniError):
    """A client event that is not valid JSON, not a known event, or has a bad field. Recoverable."""

    error_type = "invalid_request_error"


class MediaError(OmniError):
    """Audio or image bytes that decode badly or break a size/length limit. Recoverable."""

    error_type = "invalid_request_error"


class AuthError(OmniError):
    """Missing or wrong API key; the connection is closed."""

    error_type = "invalid_request_error"
    close_code = CLOSE_POLICY_VIOLATION


class CapacityError(OmniError):
    """Every session slot is in use; the client should retry later."""

    error_type = "server_error"
    close_code = CLOSE_TRY_AGAIN_LATER


class ModelError(OmniError):
    """The model failed or timed out in a way the session cannot recover from."""

    error_type = "server_error"
    close_code = CLOSE_INTERNAL_ERROR


def _leaf(exc: BaseException) -> BaseException:
    """Unwrap a TaskGroup's ExceptionGroup to the error worth reporting (a typed one if any)."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = [_leaf(e) for e in exc.exceptions]
        typed = [e for e in leaves if isinstance(e, OmniError)]
        return (typed or leaves)[0]
    return exc


def error_object(exc: BaseException) -> dict[str, Any]:
    """The OpenAI error object of `exc` (unexpected ones logged, with a reference instead of details)."""
    if isinstance(exc, OmniError):
        return {"type": exc.error_type, "code": exc.code, "message": exc.message,
                "param": exc.param, "event_id": exc.event_id}
    # Never put a traceback or internals on the wire; the reference ties the reply to the log line.
    ref = secrets.token_hex(4)
    log.error("unexpected error (ref %s)", ref, exc_info=exc)
    return {"type": "server_error", "code": "internal_error",
            "message": f"Internal server error (ref {ref}); see the server log.",
            "param": None, "event_id": None}


def to_error_event(exc: BaseException, event_id: str | None = None) -> dict[str, Any]:
    """Turn any exception into an `error` server event.

    Args:
        exc: a typed OmniError, an ExceptionGroup from a TaskGroup, or anything unexpected.
        event_id: the client event being handled, used when the exception does not carry one.

    Returns:
        The `error` server event dict, ready to serialise.
    """
    obj = error_object(_leaf(exc))
    if obj["event_id"] is None:
        obj["event_id"] = event_id
    return error(obj)


def close_code(exc: BaseException) -> int | None:
    """The WebSocket close code after reporting `exc`, or None to keep the connection open."""
    leaf = _leaf(exc)
    return leaf.close_code if isinstance(leaf, OmniError) else CLOSE_INTERNAL_ERROR
