"""A run's state: plain JSON, so a run can stop in one process and resume in another."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field

from anvia.core.messages import Message, ToolCallRequest, Usage

RunStatus = Literal["running", "suspended", "done", "failed", "terminated"]
CallOutcome = Literal["executing", "ran", "skipped", "responded", "invalid", "error", "terminated"]

STATE_VERSION = 1


class ToolCallRecord(BaseModel):
    """What became of one tool call the model asked for."""

    call_id: str
    tool_name: str
    arguments: Any
    outcome: CallOutcome
    result: Any = None
    message: str | None = None
    # What a reviewer added for the model, sent beside the result (never inside it).
    note: str | None = None
    requires_approval: bool = False
    approval_reason: str | None = None
    approved: bool | None = None
    # What the tool's policy decided, e.g. {"outcome": "allow", "rule": "small refunds"}.
    policy: dict[str, str] | None = None
    step: int = 0


class RunState(BaseModel):
    """Everything needed to continue a run: the messages, the step count, what each call did."""

    version: int = STATE_VERSION
    run_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    agent: str
    status: RunStatus = "running"
    step: int = 0
    messages: list[Message] = Field(default_factory=list)
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    context: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    # Why a hook ended the run (status "terminated").
    terminated: str | None = None

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> RunState:
        return cls.model_validate_json(text)

    def record_for(self, call_id: str) -> ToolCallRecord | None:
        return next((record for record in self.tool_calls if record.call_id == call_id), None)

    def pending_calls(self) -> list[ToolCallRequest]:
        """Calls of the last assistant message that have no finished outcome yet."""
        last = next((m for m in reversed(self.messages) if m.role == "assistant"), None)
        if last is None:
            return []
        answered = {m.tool_call_id for m in self.messages if m.role == "tool"}
        return [call for call in last.tool_calls if call.id not in answered]

    @property
    def final_text(self) -> str | None:
        last = self.messages[-1] if self.messages else None
        return last.content if last is not None and last.role == "assistant" and not last.tool_calls else None
