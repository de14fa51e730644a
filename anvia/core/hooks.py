"""Request hooks: application code that decides what happens to each tool call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from anvia.core.tools import ToolCall, ToolVerdict

OnToolCall = Callable[[ToolCall], "ToolVerdict | None"] | Callable[[ToolCall], Awaitable["ToolVerdict | None"]]
OnPolicy = Callable[[ToolCall], Any] | Callable[[ToolCall], Awaitable[Any]]
OnApprovalsRequested = Callable[[Sequence[ToolCall]], Any] | Callable[[Sequence[ToolCall]], Awaitable[Any]]


@dataclass(frozen=True)
class Hook:
    """A request hook. ``on_tool_call`` returns ``call.tool.run()``, ``call.tool.skip(msg)``,
    ``call.tool.respond(text)``, ``call.tool.terminate(msg)``, ``call.tool.suspend()``, or ``None``
    to leave the call to the next hook. ``on_approvals_requested`` hears every call of a model step
    that needs approval, at once, before any of them is asked. ``on_policy`` hears each call of
    a tool with approval metadata as soon as its policy has decided (``call.policy``: allow, deny
    or ask), before anything runs: the place to record why a call ran without review."""

    on_tool_call: OnToolCall | None = None
    on_approvals_requested: OnApprovalsRequested | None = None
    on_policy: OnPolicy | None = None
    name: str = "hook"


def create_hook(
    *,
    on_tool_call: OnToolCall | None = None,
    on_approvals_requested: OnApprovalsRequested | None = None,
    on_policy: OnPolicy | None = None,
    name: str = "hook",
) -> Hook:
    """Build a request hook; its functions may be sync or async.

    A hook that answers for a call owns its approval: the framework runs a protected tool only
    when a hook returns ``run()`` for it, and skips it with its ``reject_message`` when no hook
    answers (fail closed). A step's protected calls are all announced first
    (``on_approvals_requested``, e.g. to put them all before reviewers together), then asked one
    by one; none of them runs until every one has a verdict, and one ``suspend()`` suspends them all.
    """
    return Hook(
        on_tool_call=on_tool_call, on_approvals_requested=on_approvals_requested, on_policy=on_policy, name=name
    )
