"""Session registry: admission (a maximum), idle timeout, and freeing everything on disconnect.

Owns: the set of live connections' conversations and when each was last active (by an injected
clock). Does not own: the conversations themselves (each connection's task group does) or the
model (the worker).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from ..errors import CapacityError
from ..ids import new_id

log = logging.getLogger("omni.sessions")


@dataclass
class Lease:
    session_id: str
    last_active_s: float
    close: Callable[[str], None] | None = None  # asks the connection to close (idle timeout)


@dataclass
class SessionManager:
    max_sessions: int
    idle_timeout_s: float
    clock: Callable[[], float] = time.monotonic
    leases: dict[str, Lease] = field(default_factory=dict)

    def acquire(self) -> Lease:
        if len(self.leases) >= self.max_sessions:
            raise CapacityError(
                "server_busy",
                f"server full: {len(self.leases)} of {self.max_sessions} sessions in use; try again later",
            )
        lease = Lease(new_id("sess"), self.clock())  # the session id in its events and logs
        self.leases[lease.session_id] = lease
        return lease

    def touch(self, lease: Lease) -> None:
        lease.last_active_s = self.clock()

    def release(self, lease: Lease) -> None:
        self.leases.pop(lease.session_id, None)

    def expire_idle(self) -> list[Lease]:
        """Leases idle longer than the timeout; each gets its close callback called once."""
        now = self.clock()
        idle = [lease for lease in self.leases.values() if now - lease.last_active_s > self.idle_timeout_s]
        for lease in idle:
            self.release(lease)
            if lease.close:
                try:
                    lease.close("idle timeout")
                except Exception:  # noqa: BLE001 - one connection's failure must not stop the reaper
                    log.exception("closing idle session %s failed", lease.session_id)
        return idle

    @property
    def reap_period_s(self) -> float:
        """How often the reaper looks: an idle session is closed at most this late (5 s at most)."""
        return min(5.0, self.idle_timeout_s / 2)

    async def reap(self) -> None:
        """The server's reaper task: `expire_idle` every `reap_period_s`, until cancelled."""
        while True:
            await asyncio.sleep(self.reap_period_s)
            self.expire_idle()

    @property
    def in_use(self) -> int:
        return len(self.leases)
