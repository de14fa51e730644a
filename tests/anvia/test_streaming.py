"""Streaming: the answer's text reaches the run's event sinks piece by piece as the model writes it
(``text_delta`` events), tool calls split across chunks come out whole, and a stream that breaks
fails the run with a reason a person can act on. Against a real local server, through the SDK."""

from __future__ import annotations

import json
import time

import pytest
from pydantic import BaseModel

import anvia
from anvia import Message, ModelRequest, ModelResponseError, ModelUnavailableError, OfflineModel
from tests.support.sse_server import StreamingChatServer, call_piece, chunk, text_chunks, usage_chunk


@pytest.fixture
def server():
    with StreamingChatServer() as running:
        yield running


def model_for(server: StreamingChatServer, **kwargs) -> anvia.OpenAICompatibleModel:
    options = {"model": "test-model", "api_key": "sk-test", "timeout": 5.0, "max_retries": 2, **kwargs}
    return anvia.OpenAICompatibleModel(base_url=server.base_url, **options)


class RefundInput(BaseModel):
    order_id: str
    amount: float


def refund_agent(model, executed: list) -> anvia.Agent:
    def refund(args: RefundInput) -> dict:
        executed.append(args)
        return {"order_id": args.order_id, "amount": args.amount}

    tool = anvia.create_tool(name="refund_order", description="Refund an order.", input=RefundInput, execute=refund)
    return anvia.Agent(name="support", instructions="Help.", model=model, tools=[tool])


class Recorded:
    """An event sink that keeps every event."""

    def __init__(self) -> None:
        self.events: list[anvia.Event] = []

    def __call__(self, event: anvia.Event) -> None:
        self.events.append(event)

    def of(self, type_: str) -> list[dict]:
        return [e.data for e in self.events if e.type == type_]

    @property
    def pieces(self) -> list[str]:
        return [d["text"] for d in self.of("text_delta")]


async def test_the_answer_reaches_the_sink_piece_by_piece_and_is_kept_whole(server):
    pieces = ["Your ", "order ", "A-1001 ", "has ", "shipped", "."]
    server.stream([*text_chunks(pieces), usage_chunk(40, 6)])
    sink = Recorded()
    agent = anvia.Agent(name="support", instructions="Help.", model=model_for(server))

    response = await agent.prompt("Where is A-1001?").on_event(sink).send()

    assert sink.pieces == pieces
    assert response.text == "Your order A-1001 has shipped."
    assert sink.of("text") == [{"text": "Your order A-1001 has shipped.", "final": True}]
    assert response.messages[-1] == Message(role="assistant", content="Your order A-1001 has shipped.")
    assert [e.type for e in sink.events] == ["step", *["text_delta"] * 6, "text", "done"]
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.model_calls) == (40, 6, 1)
    body = server.bodies[0]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def test_a_server_that_sends_no_usage_counts_one_call_and_no_tokens(server):
    server.stream(text_chunks(["Hi", "!"]))  # llama.cpp's server ignores stream_options

    response = (
        await anvia.Agent(name="a", instructions="Help.", model=model_for(server))
        .prompt("Hi")
        .on_event(Recorded())
        .send()
    )

    assert response.text == "Hi!"
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.model_calls) == (0, 0, 1)


async def test_tool_calls_split_across_chunks_come_out_whole(server):
    # OpenAI's way: id and name in a call's first piece only, arguments in many, calls by index,
    # the pieces of two calls interleaved.
    server.stream(
        [
            chunk(role="assistant", content=None),
            chunk(tool_calls=[call_piece(0, id="call_a", name="refund_order", arguments="")]),
            chunk(tool_calls=[call_piece(0, arguments='{"order_')]),
            chunk(tool_calls=[call_piece(1, id="call_b", name="refund_order", arguments='{"order_id": ')]),
            chunk(tool_calls=[call_piece(0, arguments='id": "A-1", ')]),
            chunk(tool_calls=[call_piece(1, arguments='"A-2", "amount": 20}')]),
            chunk(tool_calls=[call_piece(0, arguments='"amount": 15.5}')]),
            chunk(finish_reason="tool_calls"),
            usage_chunk(50, 30),
        ]
    )
    server.stream([*text_chunks(["Both ", "refunds ", "are ", "done."]), usage_chunk(90, 4)])
    executed: list[RefundInput] = []
    sink = Recorded()

    response = await refund_agent(model_for(server), executed).prompt("Refund A-1 and A-2").on_event(sink).send()

    assert executed == [RefundInput(order_id="A-1", amount=15.5), RefundInput(order_id="A-2", amount=20)]
    calls = response.messages[1].tool_calls
    assert [(c.id, c.name, json.loads(c.arguments)) for c in calls] == [
        ("call_a", "refund_order", {"order_id": "A-1", "amount": 15.5}),
        ("call_b", "refund_order", {"order_id": "A-2", "amount": 20}),
    ]
    assert response.text == "Both refunds are done."
    assert sink.pieces == ["Both ", "refunds ", "are ", "done."]  # no pieces for the calls
    assert response.usage.model_calls == 2
    assert (response.usage.input_tokens, response.usage.output_tokens) == (140, 34)


async def test_tool_call_pieces_that_repeat_id_and_name_as_llama_cpp_sends_them(server):
    long_id = "call__0_refund_order_cmpl-3a6390a3-4c5b-4a1f-943c-f01b866af5f5"
    arguments = ['{"order_id"', ': "A-7", ', '"amount": ', "30}"]
    server.stream(
        [
            chunk(role="assistant"),
            *[chunk(tool_calls=[call_piece(0, id=long_id, name="refund_order", arguments=a)]) for a in arguments],
            chunk(finish_reason="tool_calls"),
        ]
    )
    server.stream(text_chunks(["Done."]))
    executed: list[RefundInput] = []

    response = await refund_agent(model_for(server), executed).prompt("Refund A-7").on_event(Recorded()).send()

    assert executed == [RefundInput(order_id="A-7", amount=30)]
    assert [(c.id, c.name) for c in response.messages[1].tool_calls] == [(long_id, "refund_order")]


async def test_whole_tool_calls_without_an_index_each_start_a_call(server):
    server.stream(
        [
            chunk(tool_calls=[call_piece(None, id="c1", name="refund_order", arguments='{"order_id": "A-1", ')]),
            chunk(tool_calls=[call_piece(None, arguments='"amount": 1}')]),
            chunk(tool_calls=[call_piece(None, id="c2", name="refund_order", arguments='{"order_id": "A-2"}')]),
            chunk(finish_reason="tool_calls"),
        ]
    )

    reply = await model_for(server).stream(ModelRequest(instructions="x", messages=[Message.user("y")]), _ignore)

    assert [(c.id, json.loads(c.arguments)) for c in reply.tool_calls] == [
        ("c1", {"order_id": "A-1", "amount": 1}),
        ("c2", {"order_id": "A-2"}),
    ]


async def test_text_beside_tool_calls_is_streamed_then_kept_as_a_note(server):
    server.stream(
        [
            chunk(content="Let me "),
            chunk(content="check."),
            chunk(
                tool_calls=[call_piece(0, id="c1", name="refund_order", arguments='{"order_id": "A-1", "amount": 5}')]
            ),
            chunk(finish_reason="tool_calls"),
        ]
    )
    server.stream(text_chunks(["Refunded."]))
    sink = Recorded()

    await refund_agent(model_for(server), []).prompt("Refund A-1 $5").on_event(sink).send()

    assert sink.pieces == ["Let me ", "check.", "Refunded."]
    assert sink.of("text") == [{"text": "Let me check.", "final": False}, {"text": "Refunded.", "final": True}]


async def test_a_stream_that_breaks_midway_fails_the_run_with_a_reason_and_is_not_retried(server):
    server.stream(text_chunks(["The ", "refund ", "is ", "on ", "its ", "way."]), break_after=3)
    sink = Recorded()
    agent = anvia.Agent(name="support", instructions="Help.", model=model_for(server, max_retries=2))

    with pytest.raises(ModelUnavailableError) as caught:
        await agent.prompt("Refund?").on_event(sink).send()

    message = str(caught.value)
    assert "broke while the model was answering" in message
    assert server.base_url in message
    assert "after 3 chunks" in message
    assert "sending the message again retries" in message
    assert sink.pieces == ["The ", "refund "]  # what was shown before the break
    assert caught.value.state.status == "failed"
    assert sink.of("error")[0]["kind"] == "ModelUnavailableError"
    assert len(server.bodies) == 1  # the pieces were shown: not asked again behind the page's back


async def test_a_stream_that_ends_before_the_model_finished_is_an_error(server):
    server.stream(text_chunks(["Half an ", "answer"], finish_reason=None), done=False)

    with pytest.raises(ModelUnavailableError, match="ended the stream before the model finished"):
        await model_for(server).stream(ModelRequest(instructions="x", messages=[Message.user("y")]), _ignore)


async def test_an_error_reported_inside_the_stream_is_named(server):
    server.stream([chunk(content="Hel"), {"error": {"message": "the GPU fell over", "type": "server_error"}}])

    with pytest.raises(ModelUnavailableError, match="the GPU fell over"):
        await model_for(server).stream(ModelRequest(instructions="x", messages=[Message.user("y")]), _ignore)


async def test_a_chunk_that_is_not_json_is_a_model_response_error(server):
    server.stream([chunk(content="Hel"), b"data: {not json\n\n"])

    with pytest.raises(ModelResponseError, match="not a chat-completion chunk"):
        await model_for(server).stream(ModelRequest(instructions="x", messages=[Message.user("y")]), _ignore)


async def test_a_server_that_ignores_stream_and_answers_one_completion_is_understood(server):
    server.reply_json(
        {
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "All at once."}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3},
        }
    )
    sink = Recorded()

    response = await anvia.Agent(name="a", instructions="x", model=model_for(server)).prompt("y").on_event(sink).send()

    assert response.text == "All at once."
    assert sink.pieces == ["All at once."]
    assert (response.usage.input_tokens, response.usage.output_tokens) == (5, 3)


async def test_an_empty_streamed_reply_is_asked_once_more(server):
    server.stream(text_chunks([]))
    server.stream(text_chunks(["Here ", "you go."]))
    sink = Recorded()

    response = await anvia.Agent(name="a", instructions="x", model=model_for(server)).prompt("y").on_event(sink).send()

    assert response.text == "Here you go."
    assert len(server.bodies) == 2
    assert response.usage.model_calls == 2


async def test_an_empty_streamed_reply_twice_fails(server):
    server.stream(text_chunks(["  "]))
    server.stream(text_chunks([]))

    with pytest.raises(ModelResponseError, match="neither text nor a tool call, twice"):
        await anvia.Agent(name="a", instructions="x", model=model_for(server)).prompt("y").on_event(Recorded()).send()


async def test_without_a_listener_or_with_streaming_off_one_plain_request_is_made(server):
    plain = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Plain."}}]}
    server.reply_json(plain)
    server.reply_json(plain)
    sink = Recorded()

    unheard = await anvia.Agent(name="a", instructions="x", model=model_for(server)).prompt("y").send()
    switched_off = (
        await anvia.Agent(name="a", instructions="x", model=model_for(server, streaming=False))
        .prompt("y")
        .on_event(sink)
        .send()
    )

    assert unheard.text == switched_off.text == "Plain."
    assert ["stream" in body for body in server.bodies] == [False, False]
    assert sink.pieces == []


async def test_the_offline_model_streams_word_by_word():
    sink = Recorded()
    agent = anvia.Agent(name="a", instructions="x", model=OfflineModel(word_delay=0.01))

    started = time.monotonic()
    response = await agent.prompt("hello").on_event(sink).send()

    pieces = sink.pieces
    assert "".join(pieces) == response.text
    assert len(pieces) == len(response.text.split()) > 10
    assert all(len(piece.split()) == 1 for piece in pieces)
    assert time.monotonic() - started >= 0.01 * (len(pieces) - 1)
    assert [e.at for e in sink.events if e.type == "text_delta"] == sorted(
        e.at for e in sink.events if e.type == "text_delta"
    )


async def test_the_offline_model_is_quiet_for_tool_calls():
    sink = Recorded()
    executed: list[RefundInput] = []

    await refund_agent(OfflineModel(), executed).prompt("refund order A-1001, $20").on_event(sink).send()

    assert executed == [RefundInput(order_id="A-1001", amount=20)]
    assert "".join(sink.pieces) == sink.of("text")[-1]["text"]  # only the final answer was streamed


async def _ignore(piece: str) -> None:
    pass
