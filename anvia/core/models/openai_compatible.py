"""A client for the OpenAI chat-completions protocol (OpenAI, Ollama, vLLM, llama.cpp, LM Studio)."""

from __future__ import annotations

import json
from typing import Any

import openai

from anvia.core.errors import ModelNotFoundError, ModelResponseError, ModelUnavailableError
from anvia.core.messages import Message, ModelReply, ModelRequest, ToolCallRequest, Usage


class OpenAICompatibleModel:
    """Chat completions through the official ``openai`` SDK.

    The SDK retries connection errors, 408/409/429 and 5xx with exponential backoff and honours
    ``Retry-After`` / ``retry-after-ms``; what is left after ``max_retries`` becomes a ``ModelError``
    with a message a person can act on.
    """

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
    ):
        self.model = model
        self.name = model
        self.base_url = base_url
        self._client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key or "not-needed", timeout=timeout, max_retries=max_retries
        )

    def __repr__(self) -> str:
        return f"OpenAICompatibleModel(model={self.model!r}, base_url={self.base_url!r})"

    async def complete(self, request: ModelRequest) -> ModelReply:
        where = self.base_url or "the OpenAI API"
        kwargs: dict[str, Any] = {"model": self.model, "messages": _wire_messages(request)}
        if request.tools:
            kwargs["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                }
                for t in request.tools
            ]
        try:
            completion = await self._client.chat.completions.create(**kwargs)
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


def _wire_messages(request: ModelRequest) -> list[dict[str, Any]]:
    wire: list[dict[str, Any]] = [{"role": "system", "content": request.instructions}]
    for message in request.messages:
        wire.append(_wire_message(message))
    return wire


def _wire_message(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content or ""}
    item: dict[str, Any] = {"role": message.role, "content": message.content}
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
        calls.append(ToolCallRequest(id=wire_call.id or "", name=name, arguments=function.arguments or "{}"))
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
