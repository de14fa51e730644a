"""A client for the OpenAI chat-completions protocol (OpenAI, Ollama, vLLM, llama.cpp, LM Studio)."""

from __future__ import annotations

import contextlib
import contextvars
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import httpx2
import openai
from openai.types.chat import ChatCompletion

from anvia.core.errors import ModelNotFoundError, ModelResponseError, ModelUnavailableError
from anvia.core.messages import Message, ModelReply, ModelRequest, ToolCallRequest, Usage
from anvia.core.models.base import TextPieceSink

TOOL_CHOICE_KEYWORDS = ("auto", "none", "required")

_T = TypeVar("_T")

# The SDK clients open in the current run, per model: ``session()`` sets it, ``complete()`` reads it.
# A context variable, not an attribute, because an ``httpx`` pool belongs to the event loop that
# opened its connections: a client kept on the model and reused from the next ``async_to_sync``
# loop fails with "Event loop is closed" (see README "With a real model").
_open_clients: contextvars.ContextVar[dict[int, openai.AsyncOpenAI] | None] = contextvars.ContextVar(
    "anvia_open_openai_clients", default=None
)


class OpenAICompatibleModel:
    """Chat completions through the official ``openai`` SDK, correct under any event loop or thread.

    No SDK client outlives the loop it was opened on: a run's calls share one client (and its
    connections) inside ``session()``, which the agent opens around each ``send()``; a call made
    outside a session gets a client of its own, closed when it returns. The SDK retries connection
    errors, 408/409/429 and 5xx with exponential backoff and honours ``Retry-After`` /
    ``retry-after-ms``; what is left after ``max_retries`` becomes a ``ModelError`` with a message a
    person can act on.

    ``tool_choice`` is sent with every request that offers tools (``"auto"`` unless the agent asks
    otherwise): some servers (llama.cpp's) only put the tools into the prompt when it is present.
    ``temperature``, ``seed`` and ``max_tokens`` are passed through when set.

    ``stream()`` asks the server to stream (``"stream": true``, with ``stream_options.include_usage``
    for the token counts; servers that ignore it count 0 tokens, still 1 call) and hands each piece
    of text over as it arrives, while tool calls split across chunks (ids, names and JSON arguments
    in pieces, several calls by ``index``) are put back together into whole calls. A server that
    answers one plain completion instead is understood too. A stream that breaks or ends before the
    model finished is a ``ModelUnavailableError`` and is not retried here: the pieces were shown
    already, and the run fails with a clear reason instead of showing the answer twice. With
    ``streaming=False`` it makes one plain request, like ``complete()``.
    """

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        tool_choice: str = "auto",
        temperature: float | None = None,
        seed: int | None = None,
        max_tokens: int | None = None,
        streaming: bool = True,
    ):
        self.model = model
        self.name = model
        self.base_url = base_url
        self.api_key = api_key or "not-needed"
        self.timeout = timeout
        self.max_retries = max_retries
        self.tool_choice = tool_choice
        self.temperature = temperature
        self.seed = seed
        self.max_tokens = max_tokens
        self.streaming = streaming
        self._ssl_context = None
        self._ssl_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OpenAICompatibleModel(model={self.model!r}, base_url={self.base_url!r})"

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        """Share one SDK client (and its connections) among the calls made inside, on this loop."""
        opened = dict(_open_clients.get() or {})
        if id(self) in opened:
            yield
            return
        client = self._new_client()
        opened[id(self)] = client
        token = _open_clients.set(opened)
        try:
            yield
        finally:
            _open_clients.reset(token)
            await client.close()

    async def complete(self, request: ModelRequest) -> ModelReply:
        """One chat completion, in one plain request."""
        return await self._with_client(lambda client: self._complete(client, request))

    async def stream(self, request: ModelRequest, on_text: TextPieceSink) -> ModelReply:
        """One chat completion, streamed: ``on_text(piece)`` is awaited for each piece of text."""
        if not self.streaming:
            return await self.complete(request)
        return await self._with_client(lambda client: self._stream(client, request, on_text))

    async def _with_client(self, ask: Callable[[openai.AsyncOpenAI], Awaitable[_T]]) -> _T:
        client = (_open_clients.get() or {}).get(id(self))
        if client is not None:
            return await ask(client)
        async with self._new_client() as own_client:
            return await ask(own_client)

    def _new_client(self) -> openai.AsyncOpenAI:
        # Building an SSL context costs ~20 ms; one per model is shared by the clients of every
        # loop (an SSLContext is safe to share between threads).
        with self._ssl_lock:
            if self._ssl_context is None:
                self._ssl_context = httpx2.create_ssl_context()
        return openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=self.api_key,
            timeout=self.timeout,
            max_retries=self.max_retries,
            http_client=openai.DefaultAsyncHttpxClient(verify=self._ssl_context, timeout=self.timeout),
        )

    def request_body(self, request: ModelRequest) -> dict[str, Any]:
        """The chat-completions body this client sends for ``request``."""
        body: dict[str, Any] = {"model": self.model, "messages": _wire_messages(request)}
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                }
                for t in request.tools
            ]
            body["tool_choice"] = wire_tool_choice(request.tool_choice or self.tool_choice)
        for option in ("temperature", "seed", "max_tokens"):
            value = getattr(self, option)
            if value is not None:
                body[option] = value
        return body

    @property
    def _where(self) -> str:
        return self.base_url or "the OpenAI API"

    async def _complete(self, client: openai.AsyncOpenAI, request: ModelRequest) -> ModelReply:
        with self._model_errors():
            completion = await client.chat.completions.create(**self.request_body(request))
        return _reply_from(completion, self._where)

    async def _stream(self, client: openai.AsyncOpenAI, request: ModelRequest, on_text: TextPieceSink) -> ModelReply:
        where = self._where
        body = {**self.request_body(request), "stream": True, "stream_options": {"include_usage": True}}
        with self._model_errors():
            stream = await client.chat.completions.create(**body)
        async with stream:
            if "text/event-stream" not in stream.response.headers.get("content-type", ""):
                # The server ignored "stream" and answered one completion (or something else).
                with self._model_errors():
                    raw = await stream.response.aread()
                reply = _reply_from(_completion_from(raw, where), where)
                if reply.text:
                    await on_text(reply.text)
                return reply
            collected = _StreamedReply(where)
            try:
                async for chunk in stream:
                    piece = collected.add(chunk)
                    if piece:
                        await on_text(piece)
            except openai.APIConnectionError as error:  # timeouts too
                raise ModelUnavailableError(
                    f"The connection to {where} broke while the model was answering ({collected.progress}): "
                    f"{error.__cause__ or error}. The partial answer was dropped; sending the message again retries."
                ) from error
            except openai.APIError as error:
                raise ModelUnavailableError(
                    f"{where} reported an error while the model was answering ({collected.progress}): {error.message}"
                ) from error
            except json.JSONDecodeError as error:
                raise ModelResponseError(
                    f"{where} streamed a piece that is not a chat-completion chunk ({collected.progress})."
                ) from error
            return collected.reply()

    @contextlib.contextmanager
    def _model_errors(self) -> Iterator[None]:
        """The SDK's errors (what is left after its retries) as ``ModelError``s a person can act on."""
        where = self._where
        try:
            yield
        except openai.NotFoundError as error:
            raise ModelNotFoundError(
                f"The model {self.model!r} was not found at {where} (or the base URL is wrong): {_detail(error)}"
            ) from error
        except openai.AuthenticationError as error:
            raise ModelUnavailableError(f"{where} refused the API key: {_detail(error)}") from error
        except openai.RateLimitError as error:
            raise ModelUnavailableError(f"{where} kept answering 'rate limited' after retries.") from error
        except openai.APIStatusError as error:
            raise ModelUnavailableError(f"{where} answered HTTP {error.status_code}: {_detail(error)}") from error
        except openai.APIConnectionError as error:
            raise ModelUnavailableError(f"Could not reach {where}: {error}") from error
        except (json.JSONDecodeError, openai.APIResponseValidationError) as error:
            raise ModelResponseError(f"{where} answered with a body that is not a chat completion.") from error


class _StreamedReply:
    """The chunks of one streamed completion, put back together.

    Text pieces are joined. Tool calls come in pieces keyed by ``index``: the id and the name in
    the first piece (llama.cpp repeats both in every piece: the first wins, never concatenated),
    the JSON arguments spread over many. A server that sends no ``index`` starts a call with each
    new id and continues the last one otherwise. Usage comes in the last chunk, if at all.
    """

    def __init__(self, where: str):
        self.where = where
        self.text: list[str] = []
        self.calls: list[dict[str, Any]] = []
        self.usage: Any = None
        self.chunks = 0
        self.finished = False

    @property
    def progress(self) -> str:
        return f"after {self.chunks} chunk{'s' if self.chunks != 1 else ''}"

    def add(self, chunk: Any) -> str:
        """Take one chunk in; return its new text."""
        self.chunks += 1
        if getattr(chunk, "usage", None) is not None:
            self.usage = chunk.usage
        choices = getattr(chunk, "choices", None)
        piece = ""
        for choice in choices if isinstance(choices, list) else []:
            if getattr(choice, "index", 0) not in (0, None):
                continue  # only one answer is asked for (n=1)
            if getattr(choice, "finish_reason", None):
                self.finished = True
            delta = getattr(choice, "delta", None)
            content = getattr(delta, "content", None)
            if isinstance(content, str):
                piece += content
            for wire_call in getattr(delta, "tool_calls", None) or []:
                self._add_call(wire_call)
        if piece:
            self.text.append(piece)
        return piece

    def _add_call(self, wire_call: Any) -> None:
        call_id = getattr(wire_call, "id", None) or ""
        function = getattr(wire_call, "function", None)
        name = getattr(function, "name", None)
        arguments = getattr(function, "arguments", None)
        entry = self._entry(getattr(wire_call, "index", None), call_id)
        if call_id and not entry["id"]:
            entry["id"] = call_id
        if isinstance(name, str) and name and not entry["name"]:
            entry["name"] = name
        if isinstance(arguments, str):
            entry["arguments"] += arguments
        elif arguments is not None:
            entry["arguments"] += json.dumps(arguments)

    def _entry(self, index: Any, call_id: str) -> dict[str, Any]:
        if index is not None:
            found = next((e for e in self.calls if e["index"] == index), None)
        elif call_id:
            found = next((e for e in self.calls if e["id"] == call_id), None)
        else:
            found = self.calls[-1] if self.calls else None
        if found is None:
            found = {"index": index, "id": "", "name": "", "arguments": ""}
            self.calls.append(found)
        return found

    def reply(self) -> ModelReply:
        if not self.finished:
            raise ModelUnavailableError(
                f"{self.where} ended the stream before the model finished its answer ({self.progress}); "
                "the partial answer was dropped. Sending the message again retries."
            )
        calls = []
        for entry in self.calls:
            if not entry["name"]:
                raise ModelResponseError(f"{self.where} streamed a tool call that has no function name.")
            calls.append(ToolCallRequest(id=entry["id"], name=entry["name"], arguments=entry["arguments"] or "{}"))
        usage = self.usage
        return ModelReply(
            text="".join(self.text) or None,
            tool_calls=calls,
            usage=Usage(
                input_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                output_tokens=getattr(usage, "completion_tokens", 0) or 0,
                model_calls=1,
            ),
        )


def wire_tool_choice(choice: str) -> str | dict[str, Any]:
    """``"auto"``, ``"none"`` and ``"required"`` as they are; any other value names a tool."""
    if choice in TOOL_CHOICE_KEYWORDS:
        return choice
    return {"type": "function", "function": {"name": choice}}


def _wire_messages(request: ModelRequest) -> list[dict[str, Any]]:
    # A system message first, always: llama.cpp's function-calling template puts the tools into it.
    wire: list[dict[str, Any]] = [{"role": "system", "content": request.instructions}]
    for message in request.messages:
        wire.append(_wire_message(message))
    return wire


def _wire_message(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content or ""}
    # Always a string: llama.cpp's server (and others) refuse `"content": null` beside tool calls.
    item: dict[str, Any] = {"role": message.role, "content": message.content or ""}
    if message.tool_calls:
        item["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    return item


def _reply_from(completion: Any, where: str) -> ModelReply:
    # A server that answers 200 with HTML makes the SDK hand back a plain string.
    choices = getattr(completion, "choices", None)
    message = getattr(choices[0], "message", None) if choices else None
    if message is None:
        raise ModelResponseError(f"{where} answered with a body that is not a chat completion.")
    calls = []
    for wire_call in message.tool_calls or []:
        function = getattr(wire_call, "function", None)
        name = getattr(function, "name", None)
        if not isinstance(name, str) or not name:
            raise ModelResponseError(f"{where} answered with a tool call that has no function name.")
        arguments = function.arguments
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments if arguments is not None else {})
        calls.append(ToolCallRequest(id=wire_call.id or "", name=name, arguments=arguments or "{}"))
    usage = getattr(completion, "usage", None)
    return ModelReply(
        text=message.content or None,
        tool_calls=calls,
        usage=Usage(
            input_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            output_tokens=getattr(usage, "completion_tokens", 0) or 0,
            model_calls=1,
        ),
    )


def _completion_from(raw: bytes, where: str) -> Any:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelResponseError(f"{where} answered with a body that is not a chat completion.") from error
    if not isinstance(data, dict):
        raise ModelResponseError(f"{where} answered with a body that is not a chat completion.")
    return ChatCompletion.construct(**data)


def _detail(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(error.message)
