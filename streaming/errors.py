"""The service's error taxonomy, below every layer that raises: typed errors and close codes.

Owns: the domain exceptions (each carrying an OpenAI error `type` and `code`, and the WebSocket
close code that ends the session, or None to keep it open) and `close_code` (exception -> close
code). The session, the workers and the gateway raise these; only the gateway turns them into
wire events (gateway/errors.py). Imports nothing from the service, so every layer may import it.
"""

from __future__ import annotations

from typing import ClassVar

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

    def __init__(self, code: str, message: str, param: str | None = None, event_id: str | None = None) -> None:
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


def leaf(exc: BaseException) -> BaseException:
    """Unwrap a TaskGroup's ExceptionGroup to the error worth reporting (a typed one if any)."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = [leaf(e) for e in exc.exceptions]
        typed = [e for e in leaves if isinstance(e, OmniError)]
        return (typed or leaves)[0]
    return exc


def close_code(exc: BaseException) -> int | None:
    """The WebSocket close code after reporting `exc`, or None to keep the connection open."""
    e = leaf(exc)
    return e.close_code if isinstance(e, OmniError) else CLOSE_INTERNAL_ERROR
