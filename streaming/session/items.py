"""The conversation's items as the client last saw them, for `conversation.item.retrieve` and
for telling an assistant item from others: the latest MAX_ITEMS_KEPT, bounded memory."""

from __future__ import annotations

from collections import OrderedDict

from . import events as E

MAX_ITEMS_KEPT = 256  # items `conversation.item.retrieve` can fetch (the latest ones)


class ItemLog:
    def __init__(self) -> None:
        self._items: OrderedDict[str, E.Item] = OrderedDict()

    def saw(self, ev: object) -> None:
        """Note what a session event says about items (call it with every event sent)."""
        if isinstance(ev, (E.ItemAdded, E.ItemDone, E.ResponseStarted, E.ResponseEnded)):
            self._items[ev.item.id] = ev.item  # frozen: a later transcript makes a new one
            self._items.move_to_end(ev.item.id)
            while len(self._items) > MAX_ITEMS_KEPT:
                self._items.popitem(last=False)
        elif isinstance(ev, E.TranscriptDone) and (item := self._items.get(ev.item_id)) is not None:
            self._items[ev.item_id] = item.with_transcript(ev.transcript)

    def get(self, item_id: str) -> E.Item | None:
        return self._items.get(item_id)

    def drop(self, item_id: str) -> None:
        self._items.pop(item_id, None)
