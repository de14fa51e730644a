"""Events a run emits as it goes, for chat pages, Studio and logs."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import BaseModel, Field

EventType = Literal[
    "step",
    "tool_call",
    "approval_requested",
    "approval_decided",
    "tool_result",
    # A piece of the model's text as it is written ({"text": piece}), sent only while someone
    # listens (the run has an event sink) and the model client can stream. Live display only:
    # the whole text follows in a "text" event and in the run's messages, so keep no piece.
    "text_delta",
    "text",
    "done",
    "error",
    "suspended",
    "terminated",
]


class Event(BaseModel):
    """One thing that happened in a run. ``data`` is plain JSON."""

    type: EventType
    run_id: str
    step: int
    data: dict[str, Any] = Field(default_factory=dict)
    at: float = Field(default_factory=time.time)


EventSink = Callable[[Event], None] | Callable[[Event], Awaitable[None]]
