"""OpenAICompatibleModel against a real local chat-completions server, through the real openai SDK."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest
from pydantic import BaseModel, Field

import anvia
from anvia import (
    Message,
    ModelError,
    ModelNotFoundError,
    ModelRequest,
    ModelResponseError,
    ModelUnavailableError,
    OpenAICompatibleModel,
)
from tests.support.chat_server import ChatServer, completion, tool_call

FAST_RETRY = {"retry-after-ms": "10"}


@pytest.fixture
def server():
    with ChatServer() as running:
        yield running


def model_for(server: ChatServer, **kwargs) -> OpenAICompatibleModel:
    options = {"model": "test-model", "api_key": "sk-test", "timeout": 5.0, "max_retries": 2, **kwargs}
    return OpenAICompatibleModel(base_url=server.base_url, **options)


def hello() -> ModelRequest:
    return ModelRequest(instructions="Be brief.", messages=[Message.user("Hello?")])


class LookupOrderInput(BaseModel):
    order_id: str = Field(description="The order number, e.g. A-1001.")
    include_items: bool = False


async def test_tool_call_round_trip_through_the_agent(server):
    model_arguments = {"order_id": "A-1001", "include_items": True}
    server.reply_completion(
        tool_calls=[tool_call("call_abc", "lookup_order", model_arguments)],
        prompt_tokens=50,
        completion_tokens=12,
    )
    server.reply_completion(text="Order A-1001 has shipped.", prompt_tokens=80, completion_tokens=20)
    executed: list[LookupOrderInput] = []

    def lookup_order(args: LookupOrderInput) -> dict:
        executed.append(args)
        return {"order_id": args.order_id, "status": "shipped", "items": 2}

    lookup = anvia.create_tool(
        name="lookup_order", description="Look up an order by its number.", input=LookupOrderInput, execute=lookup_order
    )
    agent = anvia.Agent(
        name="support", instructions="You answer questions about orders.", model=model_for(server), tools=[lookup]
    )

    response = await agent.prompt("Where is order A-1001?").send()

    # What the user sees.
    assert executed == [LookupOrderInput(order_id="A-1001", include_items=True)]
    assert response.text == "Order A-1001 has shipped."
    assert response.state.status == "done"
    assert [(c.call_id, c.tool_name, c.outcome) for c in response.tool_calls] == [("call_abc", "lookup_order", "ran")]
    assert response.tool_calls[0].arguments == {"order_id": "A-1001", "include_items": True}
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.model_calls) == (130, 32, 2)

    # What the server saw.
    assert len(server.requests) == 2
    assert all(r.method == "POST" and r.path == "/v1/chat/completions" for r in server.requests)
    assert server.requests[0].headers["authorization"] == "Bearer sk-test"
    first, second = server.bodies
    assert first["model"] == "test-model"
    assert first["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "lookup_order",
                "description": "Look up an order by its number.",
                "parameters": LookupOrderInput.model_json_schema(),
            },
        }
    ]
    assert first["messages"] == [
        {"role": "system", "content": "You answer questions about orders."},
        {"role": "user", "content": "Where is order A-1001?"},
    ]

    system, user, assistant, tool = second["messages"]
    assert system == {"role": "system", "content": "You answer questions about orders."}
    assert user == {"role": "user", "content": "Where is order A-1001?"}
    assert assistant["role"] == "assistant"
    # A string, never null: llama.cpp's server refuses `"content": null` beside tool calls.
    assert assistant["content"] == ""
    assert assistant["tool_calls"] == [
        {
            "id": "call_abc",
            "type": "function",
            "function": {"name": "lookup_order", "arguments": json.dumps(model_arguments)},
        }
    ]
    assert tool["role"] == "tool"
    assert tool["tool_call_id"] == "call_abc"
    assert json.loads(tool["content"]) == {"order_id": "A-1001", "status": "shipped", "items": 2}
    assert second["tools"] == first["tools"]


async def test_rate_limited_once_then_answers(server):
    server.reply_json({"error": {"message": "slow down", "type": "rate_limit"}}, status=429, headers=FAST_RETRY)
    server.reply_completion(text="Hi!", prompt_tokens=3, completion_tokens=1)

    reply = await model_for(server).complete(hello())

    assert reply.text == "Hi!"
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (3, 1)
    assert len(server.requests) == 2
    assert server.bodies[0] == server.bodies[1]


async def test_always_rate_limited_gives_up_after_the_retries(server):
    server.always(429, {"error": {"message": "slow down", "type": "rate_limit"}}, headers=FAST_RETRY)
    started = time.monotonic()

    with pytest.raises(ModelUnavailableError, match=r"(?i)rate limit"):
        await model_for(server, max_retries=2).complete(hello())

    assert len(server.requests) == 3
    # retry-after-ms was honoured (the SDK's own backoff would take over a second).
    assert time.monotonic() - started < 1.0


async def test_server_error_is_retried(server):
    server.reply_json({"error": {"message": "upstream hiccup"}}, status=500, headers=FAST_RETRY)
    server.reply_completion(text="Recovered.")

    reply = await model_for(server).complete(hello())

    assert reply.text == "Recovered."
    assert len(server.requests) == 2


async def test_server_error_every_time_names_the_status(server):
    server.always(503, {"error": {"message": "model is loading"}}, headers=FAST_RETRY)

    with pytest.raises(ModelUnavailableError, match="503") as caught:
        await model_for(server, max_retries=1).complete(hello())

    assert "model is loading" in str(caught.value)
    assert len(server.requests) == 2


async def test_malformed_json_body_is_a_model_response_error(server):
    server.reply(200, '{"choices": [', {"Content-Type": "application/json"})

    with pytest.raises(ModelResponseError, match="not a chat completion"):
        await model_for(server).complete(hello())

    assert len(server.requests) == 1


async def test_html_body_is_a_model_response_error(server):
    server.reply(
        200,
        "<!doctype html><html><body><h1>Welcome to nginx!</h1></body></html>",
        {"Content-Type": "text/html; charset=utf-8"},
    )

    with pytest.raises(ModelResponseError, match="not a chat completion"):
        await model_for(server).complete(hello())


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"choices": []}, id="no-choices"),
        pytest.param({"error": {"message": "backend crashed"}}, id="error-object-with-200"),
        pytest.param([], id="json-list"),
        pytest.param({"choices": [{"index": 0, "message": None}]}, id="message-null"),
        pytest.param({"choices": [{}]}, id="empty-choice"),
        pytest.param({"choices": "nope"}, id="choices-not-a-list"),
        pytest.param(
            {
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": None,
                            "tool_calls": [
                                {"id": "call_1", "type": "function", "function": {"name": None, "arguments": "{}"}}
                            ],
                        },
                    }
                ]
            },
            id="tool-call-without-name",
        ),
    ],
)
async def test_json_that_is_not_a_chat_completion_is_a_model_response_error(server, body):
    server.reply_json(body)

    with pytest.raises(ModelResponseError):
        await model_for(server).complete(hello())


async def test_unknown_model_is_model_not_found(server):
    server.reply_json({"error": {"message": "model 'nope' not found", "type": "invalid_request_error"}}, status=404)

    with pytest.raises(ModelNotFoundError) as caught:
        await model_for(server, model="nope").complete(hello())

    message = str(caught.value)
    assert "'nope'" in message
    assert "model 'nope' not found" in message
    assert server.bodies[0]["model"] == "nope"
    assert len(server.requests) == 1  # a 404 is not retried


async def test_rejected_api_key_is_model_unavailable(server):
    server.reply_json({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}, status=401)

    with pytest.raises(ModelUnavailableError, match="Incorrect API key provided"):
        await model_for(server).complete(hello())

    assert len(server.requests) == 1


async def test_connection_refused_is_model_unavailable():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}/v1"
    model = OpenAICompatibleModel(model="test-model", base_url=base_url, timeout=2.0, max_retries=0)

    with pytest.raises(ModelUnavailableError, match="Could not reach") as caught:
        await model.complete(hello())

    assert base_url in str(caught.value)


async def test_model_error_fails_the_run_and_emits_an_error_event(server):
    server.always(404, {"error": {"message": "model 'nope' not found", "type": "invalid_request_error"}})
    agent = anvia.Agent(name="support", instructions="Help.", model=model_for(server, model="nope"))
    events: list[anvia.Event] = []

    async def sink(event: anvia.Event) -> None:
        events.append(event)

    with pytest.raises(ModelError) as caught:
        await agent.prompt("Hello?").on_event(sink).send()

    error = caught.value
    assert isinstance(error, ModelNotFoundError)
    assert error.state is not None
    assert error.state.status == "failed"
    assert "'nope'" in error.state.error
    assert [e.type for e in events] == ["step", "error"]
    assert events[-1].data["kind"] == "ModelNotFoundError"
    assert "'nope'" in events[-1].data["message"]
    assert events[-1].run_id == error.state.run_id


# ---------------------------------------------------------------------------------------------
# Under every way the app runs a model: a new event loop per run (async_to_sync, as Celery's
# threads and Studio do), several threads, plain asyncio.
# ---------------------------------------------------------------------------------------------


def _chatty_agent(server: ChatServer) -> anvia.Agent:
    return anvia.Agent(name="support", instructions="Be brief.", model=model_for(server, max_retries=0))


def test_one_model_serves_run_after_run_each_on_a_new_event_loop(server):
    """The worker's way: one model object for the process, one ``async_to_sync`` loop per run.
    A client bound to the first loop failed every second run with "Event loop is closed"."""
    server.always(200, completion(text="Hi!"))
    agent = _chatty_agent(server)

    answers = [agent.prompt(f"Hello {n}?").send_sync().text for n in range(5)]
    answers += [asyncio.run(agent.prompt("And with asyncio.run?").send()).text for _ in range(2)]

    assert answers == ["Hi!"] * 7
    assert len(server.requests) == 7


def test_one_model_serves_runs_in_several_threads_at_once(server):
    server.always(200, completion(text="Hi!"))
    agent = _chatty_agent(server)
    answers: list[str | None] = []
    errors: list[BaseException] = []

    def chat() -> None:
        try:
            for _ in range(3):
                answers.append(agent.prompt("Hello?").send_sync().text)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=chat) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert answers == ["Hi!"] * 12


def test_a_call_outside_a_run_works_on_any_loop(server):
    server.always(200, completion(text="Hi!"))
    model = model_for(server)

    replies = [asyncio.run(model.complete(hello())).text for _ in range(3)]

    assert replies == ["Hi!"] * 3


async def test_the_calls_of_one_run_share_one_connection(server):
    server.reply_completion(tool_calls=[tool_call("call_1", "lookup_order", {"order_id": "A-1"})])
    server.reply_completion(text="Shipped.")
    lookup = anvia.create_tool(
        name="lookup_order", description="Look up.", input=LookupOrderInput, execute=lambda args: {"ok": True}
    )
    agent = anvia.Agent(name="support", instructions="Help.", model=model_for(server), tools=[lookup])

    await agent.prompt("Where is A-1?").send()

    first, second = server.requests
    assert first.client_port == second.client_port


# ---------------------------------------------------------------------------------------------
# What real servers need on the wire.
# ---------------------------------------------------------------------------------------------


def _lookup_tool() -> anvia.Tool:
    return anvia.create_tool(
        name="lookup_order", description="Look up.", input=LookupOrderInput, execute=lambda args: {"ok": True}
    )


async def test_tool_choice_is_auto_unless_told_otherwise_and_absent_without_tools(server):
    server.always(200, completion(text="Hi!"))

    await (
        anvia.Agent(name="a", instructions="Help.", model=model_for(server), tools=[_lookup_tool()]).prompt("x").send()
    )
    await anvia.Agent(name="b", instructions="Help.", model=model_for(server)).prompt("x").send()
    await (
        anvia.Agent(
            name="c", instructions="Help.", model=model_for(server, tool_choice="required"), tools=[_lookup_tool()]
        )
        .prompt("x")
        .send()
    )

    with_tools, without_tools, required = server.bodies
    assert with_tools["tool_choice"] == "auto"
    assert "tool_choice" not in without_tools
    assert "tools" not in without_tools
    assert required["tool_choice"] == "required"


async def test_an_agent_may_force_a_named_tool_on_its_first_step_only(server):
    server.reply_completion(tool_calls=[tool_call("call_1", "lookup_order", {"order_id": "A-1"})])
    server.reply_completion(text="Shipped.")
    agent = anvia.Agent(
        name="support",
        instructions="Help.",
        model=model_for(server),
        tools=[_lookup_tool()],
        tool_choice=lambda state: "lookup_order" if state.step == 1 else "none",
    )

    response = await agent.prompt("Where is A-1?").send()

    assert response.text == "Shipped."
    first, second = server.bodies
    assert first["tool_choice"] == {"type": "function", "function": {"name": "lookup_order"}}
    assert second["tool_choice"] == "none"


def test_a_tool_choice_that_names_no_tool_is_refused_when_the_agent_is_built():
    with pytest.raises(ValueError, match="refund_order"):
        anvia.Agent(
            name="a", instructions="", model=anvia.OfflineModel(), tools=[_lookup_tool()], tool_choice="refund_order"
        )


async def test_temperature_seed_and_max_tokens_are_passed_through_when_set(server):
    server.always(200, completion(text="Hi!"))

    await model_for(server, temperature=0.0, seed=7, max_tokens=64).complete(hello())
    await model_for(server).complete(hello())

    tuned, plain = server.bodies
    assert (tuned["temperature"], tuned["seed"], tuned["max_tokens"]) == (0.0, 7, 64)
    assert not {"temperature", "seed", "max_tokens"} & set(plain)


async def test_long_server_made_call_ids_are_kept_and_absurd_ones_replaced_consistently(server):
    llama_id = "call__0_lookup_order_cmpl-37816154-ce7b-40ff-a234-43c10030218b"
    absurd_id = "x" * 5000
    server.reply_completion(
        tool_calls=[
            tool_call(llama_id, "lookup_order", {"order_id": "A-1"}),
            tool_call(absurd_id, "lookup_order", {"order_id": "A-2"}),
        ]
    )
    server.reply_completion(text="Both shipped.")
    keys: list[str] = []

    def lookup(args: LookupOrderInput, ctx: anvia.ToolContext) -> dict:
        keys.append(ctx.idempotency_key)
        return {"ok": True}

    tool = anvia.create_tool(name="lookup_order", description="Look up.", input=LookupOrderInput, execute=lookup)
    agent = anvia.Agent(name="support", instructions="Help.", model=model_for(server), tools=[tool])

    response = await agent.prompt("Where are A-1 and A-2?", run_id="run-1").send()

    kept, replaced = (c.call_id for c in response.tool_calls)
    assert kept == llama_id
    assert replaced.startswith("call_")
    assert len(replaced) < 100
    assert keys == [f"run-1:{llama_id}", f"run-1:{replaced}"]
    assistant, first_result, second_result = server.bodies[1]["messages"][2:]
    assert [c["id"] for c in assistant["tool_calls"]] == [llama_id, replaced]
    assert [first_result["tool_call_id"], second_result["tool_call_id"]] == [llama_id, replaced]


async def test_an_empty_reply_is_asked_again_once(server):
    server.reply_completion(text="")
    server.reply_completion(text="Hello there.")

    response = await _chatty_agent(server).prompt("Hello?").send()

    assert response.text == "Hello there."
    assert len(server.requests) == 2
    assert response.usage.model_calls == 2


async def test_two_empty_replies_fail_the_run_with_a_clear_reason(server):
    server.always(200, completion(text=""))

    with pytest.raises(ModelResponseError, match="neither text nor a tool call") as caught:
        await _chatty_agent(server).prompt("Hello?").send()

    assert len(server.requests) == 2
    assert caught.value.state.status == "failed"
