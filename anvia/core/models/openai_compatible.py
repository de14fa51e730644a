"""A client for the OpenAI chat-completions protocol (OpenAI, Ollama, vLLM, llama.cpp, LM Studio)."""

from __future__ import annotations

import contextlib
import contextvars
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import openai

from anvia.core.errors import ModelNotFoundError, ModelResponseError, ModelUnavailableError
from anvia.core.messages import Message, ModelReply, ModelRequest, ToolCallRequest, Usage

TOOL_CHOICE_KEYWORDS = ("auto", "none", "required")

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
        client = (_open_clients.get() or {}).get(id(self))
        if client is not None:
            return await self._complete(client, request)
        async with self._new_client() as own_client:
            return await self._complete(own_client, request)

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

    async def _complete(self, client: openai.AsyncOpenAI, request: ModelRequest) -> ModelReply:
        where = self.base_url or "the OpenAI API"
        try:
            completion = await client.chat.completions.create(**self.request_body(request))
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
        return _reply_from(completion, where)


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


def _detail(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(error.message)
