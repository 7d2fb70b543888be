"""Whole turns prefilled into a streaming context, as the official template writes them: an
assistant item (text and/or calls, or calls added to the assistant turn just before), tool
results (`<tool_response>` in a user turn, consecutive results in one), and a later system turn
listing the tools when they change mid-session.

A streaming context keeps its latest turn open (spec §4.2: the close comes with what follows), so
a turn here first closes whatever is open, then leaves its own open the same way: after an
assistant or system turn the next user turn or reply opens with `<|im_end|>\\n` (the flags of a
completed reply). A tool result never starts a new turn of the sliding window: it stays with the
call it answers. Messages: {"turn": True, "role": "assistant", "content": text, "calls":
[(name, arguments JSON)], "extend": bool} | {"turn": True, "role": "tool", "content": output} |
{"turn": True, "role": "system", "content": text}.
"""

from __future__ import annotations

from ..processing import prompt as PP
from . import prompt as P

ROLES = ("assistant", "tool", "system")


def render(msg: dict, new_user_msg: bool, turn_prefix: str) -> tuple[str, bool]:
    """(the text to prefill, whether it leaves a user turn open) for a turn `msg` on a context
    whose latest turn is a user turn (not `new_user_msg`) or ends as `turn_prefix` says."""
    role, content = msg["role"], PP.plain_text(msg.get("content") or "")  # media tokens would mark absent media
    if role not in ROLES:
        raise ValueError(f"unknown turn role {role!r}; expected one of {ROLES}")
    if role == "tool":
        body = P.response_text(content)
        return (turn_prefix + body if new_user_msg else "\n" + body), True
    close = turn_prefix[: len(turn_prefix) - len(PP.USER_OPEN)] if new_user_msg else "<|im_end|>\n"
    calls = "".join(P.call_text(name, PP.plain_text(args)) for name, args in msg.get("calls", ()))
    if role == "assistant" and msg.get("extend") and new_user_msg:  # calls of the assistant turn just before
        return calls, False
    if role == "system":
        return f"{close}<|im_start|>system\n{content}", False
    return close + "<|im_start|>assistant" + (f"\n{content}" if content else ("" if calls else "\n")) + calls, False
