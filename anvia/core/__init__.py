"""The Anvia agent framework. Plain Python: nothing here imports Django."""

from __future__ import annotations

from anvia.core.agent import Agent, AgentResponse, PromptRequest
from anvia.core.errors import (
    AgentRunError,
    AnviaError,
    MaxStepsExceeded,
    ModelError,
    ModelNotFoundError,
    ModelResponseError,
    ModelUnavailableError,
    ToolArgumentsError,
    ToolError,
    ToolExecutionError,
)
from anvia.core.events import Event
from anvia.core.hooks import Hook, create_hook
from anvia.core.messages import Message, ModelReply, ModelRequest, ToolCallRequest, Usage
from anvia.core.models import (
    ModelClient,
    OfflineModel,
    OpenAICompatibleModel,
    StreamingModelClient,
    create_model,
)
from anvia.core.policies import PolicyRule, PolicyVerdict, allow, ask, deny
from anvia.core.state import RunState, ToolCallRecord
from anvia.core.tools import Approval, RunTool, SkipTool, SuspendRun, Tool, ToolCall, ToolContext, create_tool, tool

__all__ = [
    "Agent",
    "AgentResponse",
    "AgentRunError",
    "AnviaError",
    "Approval",
    "Event",
    "Hook",
    "MaxStepsExceeded",
    "Message",
    "ModelClient",
    "ModelError",
    "ModelNotFoundError",
    "ModelReply",
    "ModelRequest",
    "ModelResponseError",
    "ModelUnavailableError",
    "OfflineModel",
    "OpenAICompatibleModel",
    "PolicyRule",
    "PolicyVerdict",
    "PromptRequest",
    "RunState",
    "RunTool",
    "SkipTool",
    "StreamingModelClient",
    "SuspendRun",
    "Tool",
    "ToolArgumentsError",
    "ToolCall",
    "ToolCallRecord",
    "ToolCallRequest",
    "ToolContext",
    "ToolError",
    "ToolExecutionError",
    "Usage",
    "allow",
    "ask",
    "create_hook",
    "create_model",
    "create_tool",
    "deny",
    "tool",
]
