"""The messages exchanged with a model, as plain JSON-friendly pydantic models."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ToolCallRequest(BaseModel):
    """A tool call as the model asked for it; ``arguments`` is the raw JSON text it sent."""

    id: str
    name: str
    arguments: str = "{}"


class Message(BaseModel):
    """One chat message in OpenAI's chat-completions shape."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[ToolCallRequest] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None

    @classmethod
    def user(cls, content: str) -> Message:
        return cls(role="user", content=content)

    @classmethod
    def tool_result(cls, *, call_id: str, name: str, content: str) -> Message:
        return cls(role="tool", tool_call_id=call_id, name=name, content=content)


class Usage(BaseModel):
    """Token counts, added up over a run's model calls."""

    input_tokens: int = 0
    output_tokens: int = 0
    model_calls: int = 0

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.model_calls += other.model_calls


class ToolSpec(BaseModel):
    """What a model is told about a tool: its name, description and JSON schema."""

    name: str
    description: str
    parameters: dict


class ModelRequest(BaseModel):
    """Everything a model client needs for one completion."""

    instructions: str
    messages: list[Message]
    tools: list[ToolSpec] = Field(default_factory=list)
    # "auto", "none", "required" or a tool's name; None leaves it to the model client's default.
    tool_choice: str | None = None


class ModelReply(BaseModel):
    """A model's answer: text, tool calls, or both."""

    text: str | None = None
    tool_calls: list[ToolCallRequest] = Field(default_factory=list)
    usage: Usage = Field(default_factory=lambda: Usage(model_calls=1))
