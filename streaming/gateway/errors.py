"""The one place that turns any exception into wire form: an `error` server event, or an HTTP error.

Owns: `error_object` (exception -> OpenAI error object; unexpected ones logged once, with a
reference instead of details), `to_error_event` and `http_error` (status and body for the HTTP
routes: 4xx for what the client sent, 503 when full, 500 only for the server's own failures). The typed errors and close codes themselves
are in streaming/errors.py, below the layers that raise them; re-exported here for the gateway.

The error object follows the OpenAI Realtime shape:
`{"type": "error", "event_id": ..., "error": {"type", "code", "message", "param", "event_id"}}`,
where `error.event_id` names the *client* event that caused it.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from ..errors import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    CLOSE_TRY_AGAIN_LATER,
    AuthError,
    CapacityError,
    MediaError,
    ModelError,
    OmniError,
    ProtocolError,
    close_code,
    leaf,
)
from omni.family import UnsupportedInput

from .events import error  # events.py imports nothing from here: no cycle

log = logging.getLogger(__name__)


def error_object(exc: BaseException) -> dict[str, Any]:
    """The OpenAI error object of `exc` (unexpected ones logged, with a reference instead of details)."""
    if isinstance(exc, OmniError):
        return {
            "type": exc.error_type,
            "code": exc.code,
            "message": exc.message,
            "param": exc.param,
            "event_id": exc.event_id,
        }
    if isinstance(exc, UnsupportedInput):  # the model's family has no such input or output: the session goes on
        return {
            "type": "invalid_request_error",
            "code": "unsupported_for_model",
            "message": str(exc),
            "param": None,
            "event_id": None,
        }
    # Never put a traceback or internals on the wire; the reference ties the reply to the log line.
    ref = secrets.token_hex(4)
    log.error("unexpected error (ref %s)", ref, exc_info=exc)
    return {
        "type": "server_error",
        "code": "internal_error",
        "message": f"Internal server error (ref {ref}); see the server log.",
        "param": None,
        "event_id": None,
    }


def to_error_event(exc: BaseException, event_id: str | None = None) -> dict[str, Any]:
    """Turn any exception into an `error` server event.

    Args:
        exc: a typed OmniError, an ExceptionGroup from a TaskGroup, or anything unexpected.
        event_id: the client event being handled, used when the exception does not carry one.

    Returns:
        The `error` server event dict, ready to serialise.
    """
    obj = error_object(leaf(exc))
    if obj["event_id"] is None:
        obj["event_id"] = event_id
    return error(obj)


HTTP_STATUS = ((ProtocolError, 400), (MediaError, 400), (AuthError, 401), (CapacityError, 503), (ModelError, 500))
STATUS_BY_CODE = {
    "request_too_large": 413,
    "model_not_found": 404,
    "unsupported_model": 501,
    "unsupported_for_model": 400,
}


def http_error(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """(status, body) of `exc` for an HTTP route, in OpenAI's shape: `{"error": {message, type,
    param, code}}`."""
    e = leaf(exc)
    obj = error_object(e)
    obj.pop("event_id")
    status = STATUS_BY_CODE.get(obj["code"]) or next((s for t, s in HTTP_STATUS if isinstance(e, t)), 500)
    return status, {"error": obj}
