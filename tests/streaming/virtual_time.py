"""Virtual time for scenario tests: an asyncio event loop whose clock jumps to the next timer
whenever nothing is ready, so `asyncio.sleep(30)` costs nothing and every run of a timeline
interleaves the same way (CPU work takes no virtual time at all).

Hand-written because neither looptime nor time-machine is installed; it uses only the public
selector interface asyncio calls. Nothing here may wait on real I/O (sockets, threads): virtual
time would jump past it.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any

REAL_WAIT_S = 2.0  # with no timer left, only another thread could still wake the loop


class Stuck(RuntimeError):
    """Nothing is scheduled and nothing woke the loop: the scenario would wait forever."""


class _Selector(selectors.BaseSelector):
    """The real selector (asyncio's self-pipe), polled without waiting; a wait for a timer
    advances the loop's virtual clock instead."""

    def __init__(self, loop: VirtualLoop) -> None:
        self._real, self._loop = selectors.DefaultSelector(), loop

    def register(self, fileobj, events, data=None):
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj):
        return self._real.unregister(fileobj)

    def modify(self, fileobj, events, data=None):
        return self._real.modify(fileobj, events, data)

    def get_map(self):
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout=None):
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:  # no timer at all
            ready = self._real.select(REAL_WAIT_S)
            if not ready:
                raise Stuck(f"nothing scheduled at virtual {self._loop.time():.3f} s")
            return ready
        self._loop.now += timeout  # asyncio's timeout: until the next timer is due
        return []


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.now = 0.0
        super().__init__(_Selector(self))

    def time(self) -> float:
        return self.now


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run `coro` to its end on a fresh virtual-time loop that starts at 0.0 s."""
    with asyncio.Runner(loop_factory=VirtualLoop) as runner:
        return runner.run(coro)
