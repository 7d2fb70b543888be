"""How a session starts its background work: replies, the prefill of units heard during a reply,
and transcripts are tasks the connection supervises (its task group and its error boundary), not
bare `create_task`s whose errors nobody sees. The session asks through a `Spawn`; the connection
injects one (gateway/boundary.Supervisor) before the session starts. The default, for a session
driven directly (benches, unit tests), is a plain task.

A `Spawn` returns None when the connection is closing: the coroutine was closed without running,
and the caller starts nothing (no reply on a closing connection)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

Spawn = Callable[[Coroutine[Any, Any, Any], str], "asyncio.Task | None"]


def plain_task(coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task:
    return asyncio.create_task(coro, name=name)
