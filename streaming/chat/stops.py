"""Stop sequences over streamed text: what may be sent now, and whether a stop string was reached.

Owns `StopScanner`: text pieces in (any split), text out that can never turn out to be part of a
stop string, and the point where the first stop string begins (the text before it is the reply;
the stop string itself is never sent, as OpenAI does). Holds back at most the longest stop string
less one character. Does not own: the reply (complete.py ends it when `stopped`).
"""

from __future__ import annotations


class StopScanner:
    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._held = ""  # text not sent yet: it may begin a stop string
        self.stopped = False

    def push(self, text: str) -> str:
        """The text that is safe to send after `text` arrived ("" once stopped)."""
        if self.stopped:
            return ""
        if not self.stops:
            return text
        buf = self._held + text
        hits = [i for i in (buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped, self._held = True, ""
            return buf[: min(hits)]
        keep = self._partial(buf)
        self._held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep]

    def flush(self) -> str:
        """The end of the reply: what was held back is no stop string after all."""
        out, self._held = ("" if self.stopped else self._held), ""
        return out

    def _partial(self, buf: str) -> int:
        """The longest tail of `buf` that is a proper prefix of some stop string."""
        longest = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(buf)), longest, -1):
                if s.startswith(buf[len(buf) - n :]):
                    longest = n
                    break
        return longest
