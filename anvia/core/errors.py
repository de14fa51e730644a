"""Errors raised by the agent framework."""

from __future__ import annotations


class AnviaError(Exception):
    """Base class of every error the framework raises."""


class ToolError(AnviaError):
    """Raise from a tool's ``execute`` to tell the model the call failed.

    The message goes back to the model as the tool result and the run carries on.
    Any other exception from a tool fails the run (see :class:`ToolExecutionError`).
    """


class ToolArgumentsError(AnviaError):
    """The arguments for a tool call are not valid JSON or fail its input model."""

    def __init__(self, tool_name: str, message: str, *, fields: dict[str, str] | None = None):
        super().__init__(message)
        self.tool_name = tool_name
        self.fields = fields or {}


class AgentRunError(AnviaError):
    """A run could not finish. ``state`` is the run's state at the failure, for saving."""

    state = None


class MaxStepsExceeded(AgentRunError):
    """The model kept calling tools past the agent's ``max_steps``."""


class ToolExecutionError(AgentRunError):
    """A tool raised something other than :class:`ToolError`."""


class ModelError(AgentRunError):
    """The model could not answer: unreachable, missing, rate limited or answering garbage."""


class ModelUnavailableError(ModelError):
    """The model server could not be reached or kept failing after retries."""


class ModelNotFoundError(ModelError):
    """The model server does not know the configured model."""


class ModelResponseError(ModelError):
    """The model server answered something that is not a chat completion."""
