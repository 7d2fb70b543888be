"""Ids the client sees (events, items, responses, sessions): every layer makes them the same way."""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    """An OpenAI-style id such as `event_3f2a...`, `item_...`, `resp_...`, `sess_...`."""
    return f"{prefix}_{secrets.token_hex(8)}"
