"""Data-channel fragments: a client message larger than the channel's SCTP max-message-size (aiortc
takes 64 KiB; a voice-clone clip is about 1 MB as base64) arrives in numbered pieces, joined here
before `dispatch` parses it. One event, `omni.fragment` (docs/protocol.md):

    {"type": "omni.fragment", "id": "m1", "index": 0, "count": 3, "data": "<base64>"}

`data` is base64 of one slice of the message's UTF-8 bytes, so a slice may cut a character anywhere.
Owns one message in assembly at a time; its joined size is capped at the message limit, so pieces
cost no more memory than one whole message could."""

from __future__ import annotations

import base64
import binascii
import json

from .validate import bad, get_field, in_range, no_unknown

FRAGMENT_TYPE = "omni.fragment"
_MARK = FRAGMENT_TYPE.encode()
MAX_ID_CHARS = 64


class Reassembler:
    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes
        self._id: str | None = None  # the message in assembly
        self._count = 0
        self._parts: list[bytes] = []
        self._size = 0

    def push(self, raw: str | bytes) -> str | bytes | None:
        """A data-channel message -> a whole message to dispatch, or None while pieces are missing.

        Raises ProtocolError for a malformed or out-of-order piece; the message in assembly is then
        dropped, so the next piece 0 starts clean."""
        # the common case costs one substring search
        if (_MARK not in raw) if isinstance(raw, bytes) else (FRAGMENT_TYPE not in raw):
            return raw
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return raw  # not a fragment: dispatch gives the JSON error
        if not isinstance(obj, dict) or obj.get("type") != FRAGMENT_TYPE:
            return raw
        try:
            return self._add(obj)
        except Exception:
            self._reset()
            raise

    def _add(self, obj: dict) -> bytes | None:
        no_unknown(obj, {"type", "event_id", "id", "index", "count", "data"}, "")
        mid = get_field(obj, "id", str, "", required=True)
        index = get_field(obj, "index", int, "", required=True)
        count = get_field(obj, "count", int, "", required=True)
        if not mid or len(mid) > MAX_ID_CHARS:
            raise bad("invalid_value", f"A fragment 'id' is 1 to {MAX_ID_CHARS} characters.", "id")
        in_range(count, 1, self.max_message_bytes, "count")
        in_range(index, 0, count - 1, "index")
        if index == 0:
            self._reset()
            self._id, self._count = mid, count
        elif (mid, count, index) != (self._id, self._count, len(self._parts)):
            want = (
                f"piece {len(self._parts)} of message '{self._id}'"
                if self._id is not None
                else "piece 0 of a new message"
            )
            raise bad(
                "fragment_out_of_order",
                f"Fragment {index} of message '{mid}' arrived; "
                f"expected {want}. Send the pieces of one message in order.",
                "index",
            )
        try:
            piece = base64.b64decode(get_field(obj, "data", str, "", required=True), validate=True)
        except (binascii.Error, ValueError) as e:
            raise bad("invalid_value", f"A fragment's 'data' is not valid base64: {e}.", "data") from None
        self._size += len(piece)
        if self._size > self.max_message_bytes:
            raise bad(
                "message_too_large",
                f"Message '{mid}' is over {self.max_message_bytes} bytes "
                f"(the limit) after {index + 1} of its {count} pieces.",
                None,
            )
        self._parts.append(piece)
        if len(self._parts) < self._count:
            return None
        whole = b"".join(self._parts)
        self._reset()
        return whole

    def _reset(self) -> None:
        self._id, self._count, self._parts, self._size = None, 0, [], 0
