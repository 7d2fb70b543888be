"""The conversation's items as the client last saw them, for `conversation.item.retrieve` and
for telling an assistant item from others: the latest MAX_ITEMS_KEPT, bounded memory."""

from __future__ import annotations

from collections import OrderedDict

from ..errors import ProtocolError
from . import events as E

MAX_ITEMS_KEPT = 256  # items `conversation.item.retrieve` can fetch (the latest ones)
_ITEM_EVENTS = (E.ItemAdded, E.ItemDone, E.ResponseStarted, E.MessageStarted, E.MessageEnded, E.ResponseEnded)


class ItemLog:
    def __init__(self) -> None:
        self._items: OrderedDict[str, E.AnyItem] = OrderedDict()

    def saw(self, ev: object) -> None:
        """Note what a session event says about items (call it with every event sent)."""
        if isinstance(ev, _ITEM_EVENTS) and ev.item is not None:
            self._keep(ev.item)  # frozen: a later transcript makes a new one
        elif isinstance(ev, (E.CallStarted, E.CallEnded)):
            self._keep(ev.call)
        elif isinstance(ev, E.TranscriptDone) and isinstance(item := self._items.get(ev.item_id), E.Item):
            self._items[ev.item_id] = item.with_transcript(ev.transcript)

    def _keep(self, item: E.AnyItem) -> None:
        self._items[item.id] = item
        self._items.move_to_end(item.id)
        while len(self._items) > MAX_ITEMS_KEPT:
            self._items.popitem(last=False)

    def get(self, item_id: str) -> E.AnyItem | None:
        return self._items.get(item_id)

    def retrieve(self, item_id: str, event_id: str | None) -> E.AnyItem:
        """`conversation.item.retrieve`: the item, or OpenAI's error (Pipecat ends its session on any other)."""
        item = self._items.get(item_id)
        if item is None:
            raise ProtocolError(
                "item_retrieve_invalid_item_id",
                f"no item {item_id!r} in this conversation (the last {MAX_ITEMS_KEPT} are kept)",
                "item_id",
                event_id,
            )
        return item

    def drop(self, item_id: str) -> None:
        self._items.pop(item_id, None)
