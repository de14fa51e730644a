"""Test agents offline: a scripted model and ready-made hooks."""

from __future__ import annotations

import inspect
import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from anvia.core.hooks import Hook, create_hook
from anvia.core.messages import ModelReply, ModelRequest, ToolCallRequest, Usage
from anvia.core.tools import ToolCall


@dataclass(frozen=True)
class ScriptedCall:
    """One tool call in a script: ``call("refund_order", order_id="A-1", amount=150)``."""

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str | None = None


def call(
    name: str, arguments: dict[str, Any] | str | None = None, *, id: str | None = None, **kwargs: Any
) -> ScriptedCall:
    """A scripted tool call. Pass ``arguments`` as a str to send raw (even broken) JSON."""
    return ScriptedCall(name=name, arguments=arguments if arguments is not None else kwargs, id=id)


ScriptStep = str | ScriptedCall | Sequence[ScriptedCall] | ModelReply
Responder = Callable[[ModelRequest], ScriptStep]


class ScriptedModel:
    """A model that answers from a script: one entry per model call.

    Each entry is a text reply, a ``call(...)``, a list of calls (parallel tool calls) or a
    ``ModelReply``. Or pass a function of the ``ModelRequest`` that returns such an entry.
    ``requests`` keeps every request the model received, for assertions.
    """

    name = "scripted model"

    def __init__(self, script: Iterable[ScriptStep] | Responder):
        self._responder = script if callable(script) else None
        self._script = [] if callable(script) else list(script)
        self.requests: list[ModelRequest] = []

    @property
    def calls(self) -> int:
        return len(self.requests)

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.requests.append(request.model_copy(deep=True))
        if self._responder is not None:
            step = self._responder(request)
            if inspect.isawaitable(step):
                step = await step
        else:
            if len(self.requests) > len(self._script):
                raise AssertionError(
                    f"The scripted model was called {len(self.requests)} times but has {len(self._script)} replies."
                )
            step = self._script[len(self.requests) - 1]
        return _as_reply(step)


def _as_reply(step: ScriptStep) -> ModelReply:
    if isinstance(step, ModelReply):
        return step
    if isinstance(step, str):
        return ModelReply(text=step, usage=Usage(model_calls=1))
    calls = [step] if isinstance(step, ScriptedCall) else list(step)
    return ModelReply(
        tool_calls=[
            ToolCallRequest(
                id=c.id or f"call_{uuid.uuid4().hex[:12]}",
                name=c.name,
                arguments=c.arguments if isinstance(c.arguments, str) else json.dumps(c.arguments),
            )
            for c in calls
        ],
        usage=Usage(model_calls=1),
    )


def _approve(call: ToolCall):
    return call.tool.run()


def reject_all_with(message: str | None = None) -> Hook:
    """A hook that refuses every protected call, with ``message`` or the tool's reject message."""

    def reject(call: ToolCall):
        if not call.requires_approval:
            return call.tool.run()
        return call.tool.skip(message or call.approval.reject_message)

    return create_hook(on_tool_call=reject, name="reject_all hook")


approve_all: Hook = create_hook(on_tool_call=_approve, name="approve_all hook")
"""A hook that approves every tool call."""

reject_all: Hook = reject_all_with()
"""A hook that refuses every protected call with the tool's ``reject_message``; others run."""


__all__ = ["ScriptedCall", "ScriptedModel", "approve_all", "call", "reject_all", "reject_all_with"]
