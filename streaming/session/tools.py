"""Function calling on the conversation's side: a reply's calls as items and events, and the
items a client adds around them (its results, its own calls, assistant messages).

Owns `ReplyCalls` (one response's calls: ids, output indices, the event order stock clients need,
docs/protocol.md "Function calling") and `ToolItems` (the connection's known calls, so a result
must answer one; the items the client creates, as turns the model's template writes). Does not
own: what the model was shown (context.py), the grammar and the call tokens (omni.tools), the
wire (gateway/outbound.py).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from omni.tools.spec import ToolSpec

from ..errors import ProtocolError
from ..ids import new_id
from . import events as E

if TYPE_CHECKING:
    from omni.tools.calls import CallPiece

    from .respond import Emit

MAX_CALLS_KEPT = 1024  # call ids a result may answer (the latest), bounded memory


class ReplyCalls:
    """One response's calls: each `CallPiece` batch from the engine -> CallStarted (its name
    known, arguments empty), CallArguments, CallEnded (completed) events, in order."""

    def __init__(self, send: Emit, response_id: str, on_call: Callable[[E.FunctionCall], None] | None = None):
        self.send, self.response_id, self.on_call = send, response_id, on_call
        self.ended: list[E.FunctionCall] = []  # whole or cut, in output order
        self.open: dict[int, E.FunctionCall] = {}  # piece index -> the call still streaming
        self._index: dict[int, int] = {}  # piece index -> output_index

    async def feed(self, pieces: tuple[CallPiece, ...], first_index: int, after_id: str | None) -> None:
        """`first_index`: the output index of the first call (1 after a message item);
        `after_id`: the item the first call follows."""
        for p in pieces:
            c = self.open.get(p.index)
            if c is None:
                c = E.FunctionCall(new_id("item"), new_id("call"), p.name, "", "in_progress")
                self._index[p.index] = first_index + len(self._index)
                previous = self.ended[-1].id if self.ended else after_id
                self.open[p.index] = c
                if self.on_call is not None:
                    self.on_call(c)
                await self.send(E.CallStarted(self.response_id, self._index[p.index], c, previous))
            if p.delta:
                c = E.FunctionCall(c.id, c.call_id, c.name, c.arguments + p.delta, "in_progress")
                self.open[p.index] = c
                await self.send(E.CallArguments(self.response_id, self._index[p.index], c, p.delta))
            if p.done:
                await self._end(p.index, "completed", after_id)

    async def cut(self, after_id: str | None) -> None:
        """The response ended with calls still streaming: they end incomplete (not run)."""
        for index in list(self.open):
            await self._end(index, "incomplete", after_id)

    async def _end(self, index: int, status: str, after_id: str | None) -> None:
        c = self.open.pop(index)
        c = E.FunctionCall(c.id, c.call_id, c.name, c.arguments, status)
        previous = self.ended[-1].id if self.ended else after_id
        self.ended.append(c)
        await self.send(E.CallEnded(self.response_id, self._index[index], c, previous))


def reply_tools(config, params) -> ToolSpec | None:
    """A response's ToolSpec: its own tools / tool_choice / parallel_tool_calls over the
    session's (config.ResponseParams over config.SessionConfig); None without tools."""
    tools = params.tools if params.tools is not None else config.tools
    choice, name = params.tool_choice or (config.tool_choice, config.tool_name)
    parallel = params.parallel_tool_calls if params.parallel_tool_calls is not None else config.parallel_tool_calls
    if not tools:
        if params.tool_choice is not None and choice in ("required", "function"):
            raise ProtocolError(
                "invalid_value", f"tool_choice {choice!r} needs tools; none are set", "response.tool_choice"
            )
        return None
    if choice == "function" and name not in {t.name for t in tools}:
        raise ProtocolError(
            "invalid_value", f"tool_choice names {name!r}, which is not one of the tools", "response.tool_choice.name"
        )
    return ToolSpec(tools, choice, name, parallel)


class ToolItems:
    """The connection's calls and the items a client adds around them (owner task only)."""

    def __init__(self) -> None:
        # call_id -> the call; the reply task notes its calls here as it announces them
        self.calls: OrderedDict[str, E.FunctionCall] = OrderedDict()

    def known(self, call: E.FunctionCall) -> None:
        self.calls[call.call_id] = call
        while len(self.calls) > MAX_CALLS_KEPT:
            self.calls.popitem(last=False)

    def forget(self, item_id: str) -> bool:
        """A deleted call item: its call can no longer be answered."""
        for call_id, c in list(self.calls.items()):
            if c.id == item_id:
                del self.calls[call_id]
                return True
        return False

    def create(self, ev) -> tuple[E.AnyItem, dict]:
        """A client's `function_call` / `function_call_output` / assistant `message` item
        (commands.CreateItem, parsed by the gateway), checked: (the item as added, the turn that
        puts it into the context, omni.tools.turns)."""
        item = ev.item
        item_id = item.id or new_id("item")
        if item.type == "function_call_output":
            if item.call_id not in self.calls:
                raise ProtocolError(
                    "invalid_value",
                    f"no function call with call_id {item.call_id!r} in this conversation "
                    f"(the latest {MAX_CALLS_KEPT} calls can be answered)",
                    "item.call_id",
                    ev.event_id,
                )
            return E.FunctionOutput(item_id, item.call_id, item.output), {
                "turn": True,
                "role": "tool",
                "content": item.output,
            }
        if item.type == "function_call":
            call = E.FunctionCall(item_id, item.call_id, item.name, item.arguments)
            self.known(call)
            return call, {"turn": True, "role": "assistant", "calls": [(call.name, call.arguments)]}
        text = "".join(p.text or "" for p in item.content)
        parts = tuple(
            E.Part(p.type, transcript=p.text) if p.type == "output_audio" else E.Part(p.type, text=p.text)
            for p in item.content
        )
        return E.Item(item_id, "assistant", parts), {"turn": True, "role": "assistant", "content": text}
