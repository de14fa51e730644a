"""Request hooks: application code that decides what happens to each tool call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from anvia.core.tools import ToolCall, ToolVerdict

OnToolCall = Callable[[ToolCall], "ToolVerdict | None"] | Callable[[ToolCall], Awaitable["ToolVerdict | None"]]


@dataclass(frozen=True)
class Hook:
    """A request hook. ``on_tool_call`` returns ``call.tool.run()``, ``call.tool.skip(msg)``,
    ``call.tool.suspend()``, or ``None`` to leave the call to the next hook."""

    on_tool_call: OnToolCall | None = None
    name: str = "hook"


def create_hook(*, on_tool_call: OnToolCall | None = None, name: str = "hook") -> Hook:
    """Build a request hook; ``on_tool_call`` may be a sync or an async function.

    A hook that answers for a call owns its approval: the framework runs a protected tool only
    when a hook returns ``run()`` for it, and skips it with its ``reject_message`` when no hook
    answers (fail closed).
    """
    return Hook(on_tool_call=on_tool_call, name=name)
