"""The raw `openai` SDK's realtime client with function tools against a live `omni serve` on the
tiny model: every tool_choice (named, required, auto, none; per session and per response), a call
answered with a function_call_output and then spoken about, text mode, retrieve and delete of a
call item, a saved context restored (assistant message, the client's own call and its output),
and the errors a bad schema or an unknown call_id get. Every event validates against
the SDK's own types; every call parses and matches its schema."""

from __future__ import annotations

import asyncio

import openai
import pytest
from tooltest import TIME_TOOL, WEATHER_TOOL, checked_calls

from event_types import openai_type_errors

pytestmark = pytest.mark.asyncio
TIMEOUT_S = 30


class Conn:
    """One realtime connection and every event it received, as JSON."""

    def __init__(self, conn):
        self.conn, self.events = conn, []

    async def next(self, type_: str, since: int) -> dict:
        """The first event of `type_` at or after `since`, reading on as needed; an error event
        fails the test unless that is what is awaited."""
        async with asyncio.timeout(TIMEOUT_S):
            while True:
                for e in self.events[since:]:
                    if e["type"] == type_:
                        return e
                    if e["type"] == "error" and type_ != "error":
                        pytest.fail(f"server error: {e['error']}")
                ev = await self.conn.recv()
                self.events.append(ev.to_dict())

    def mark(self) -> int:
        return len(self.events)

    async def respond(self, **response) -> tuple[dict, list[dict]]:
        """response.create -> (the response.done's response, the events since)."""
        since = self.mark()
        await self.conn.response.create(response=response or None)
        done = await self.next("response.done", since)
        return done["response"], self.events[since:]

    async def say(self, text: str) -> None:
        since = self.mark()
        await self.conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
        )
        await self.next("conversation.item.done", since)


async def connect(live_server, **session):
    client = openai.AsyncOpenAI(api_key="unused", websocket_base_url=live_server.ws_base)
    manager = client.realtime.connect(model="minicpm-o-2.6")
    conn = Conn(await manager.__aenter__())
    await conn.conn.session.update(
        session={"type": "realtime", "audio": {"input": {"turn_detection": None}}, **session}
    )
    await conn.next("session.updated", 0)
    return manager, conn


async def test_every_tool_choice_round_trip(live_server):
    manager, c = await connect(
        live_server, tools=[WEATHER_TOOL, TIME_TOOL], tool_choice={"type": "function", "name": "get_weather"}
    )
    try:
        # 1. a named tool (session's tool_choice): the response is the call alone, no message, no audio
        await c.say("What is the weather in Paris this week?")
        response, events = await c.respond()
        assert response["status"] == "completed", response
        (call,) = checked_calls(c.events, response["id"])
        assert call["name"] == "get_weather" and [i["type"] for i in response["output"]] == ["function_call"]
        assert not [e for e in events if e["type"].startswith("response.output_audio")]

        # 2. its result, then an answer in speech (tool_choice none for this response)
        since = c.mark()
        await c.conn.conversation.item.create(
            item={"type": "function_call_output", "call_id": call["call_id"], "output": '{"forecast": "sunny"}'}
        )
        added = await c.next("conversation.item.added", since)
        assert added["item"]["type"] == "function_call_output" and added["item"]["call_id"] == call["call_id"]
        assert added["previous_item_id"] == call["id"]
        await c.next("conversation.item.done", since)
        response, events = await c.respond(tool_choice="none")
        assert response["status"] in ("completed", "incomplete") and response["output"][0]["type"] == "message"
        assert not [i for i in response["output"] if i["type"] == "function_call"]
        assert [e for e in events if e["type"] == "response.output_audio.delta"], "the answer is spoken"

        # 3. required, per response: at least one call, each whole and valid (parallel calls allowed)
        await c.say("And the time?")
        response, _ = await c.respond(tool_choice="required")
        calls = checked_calls(c.events, response["id"])
        assert calls and {x["name"] for x in calls} <= {"get_weather", "get_time"}

        # 4. auto: the random model speaks (it never opens a call); any call would be valid
        response, events = await c.respond(tool_choice="auto")
        checked_calls(c.events, response["id"])
        assert response["output"] and response["output"][0]["type"] == "message"

        # 5. text mode with a forced call, and a retrieve and delete of the call item
        response, events = await c.respond(
            output_modalities=["text"], tool_choice={"type": "function", "name": "get_time"}
        )
        (call,) = checked_calls(c.events, response["id"])
        assert call["arguments"] == "{}" and not [e for e in events if "audio" in e["type"]]
        since = c.mark()
        await c.conn.conversation.item.retrieve(item_id=call["id"])
        got = await c.next("conversation.item.retrieved", since)
        assert got["item"]["type"] == "function_call" and got["item"]["arguments"] == "{}"
        await c.conn.conversation.item.delete(item_id=call["id"])
        assert (await c.next("conversation.item.deleted", since))["item_id"] == call["id"]

        # 6. a saved context restored, as Pipecat does: an assistant message, the client's own call
        # item (it joins that assistant turn) and its output; then a spoken answer
        since = c.mark()
        restored = [
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me look."}]},
            {
                "type": "function_call",
                "call_id": "call_saved",
                "name": "get_weather",
                "arguments": '{"city": "Oslo", "days": 2}',
            },
            {"type": "function_call_output", "call_id": "call_saved", "output": "snow"},
        ]
        for item in restored:
            await c.conn.conversation.item.create(item=item)
        for item in restored:
            added = await c.next("conversation.item.added", since)
            since = c.events.index(added) + 1
            assert added["item"]["type"] == item["type"]
        response, events = await c.respond(tool_choice="none")
        assert response["output"][0]["type"] == "message" and [
            e for e in events if e["type"] == "response.output_audio.delta"
        ]

        # 7. errors name the param and echo the event_id; the session is unchanged after them
        since = c.mark()
        await c.conn.send(
            {
                "type": "conversation.item.create",
                "event_id": "ev_out",
                "item": {"type": "function_call_output", "call_id": call["call_id"], "output": "late"},
            }
        )
        err = (await c.next("error", since))["error"]
        assert (err["param"], err["event_id"]) == ("item.call_id", "ev_out")
        bad = {**WEATHER_TOOL, "parameters": {"type": "object", "properties": {"x": {"type": "strin"}}}}
        await c.conn.send({"type": "session.update", "event_id": "ev_bad", "session": {"tools": [bad]}})
        err = (await c.next("error", since + 1))["error"]
        assert err["code"] == "invalid_function_parameters" and err["param"] == "session.tools[0].parameters"
        assert err["event_id"] == "ev_bad"
        response, _ = await c.respond()  # still the session's named get_weather
        (call,) = checked_calls(c.events, response["id"])
        assert call["name"] == "get_weather"
    finally:
        await manager.__aexit__(None, None, None)
    assert openai_type_errors(c.events) == []
