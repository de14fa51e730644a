"""The one small interface every model client implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from anvia.core.messages import ModelReply, ModelRequest


@runtime_checkable
class ModelClient(Protocol):
    """A chat model that may call tools. ``name`` is shown wherever the model is named."""

    name: str

    async def complete(self, request: ModelRequest) -> ModelReply:
        """Answer one request; raise ``anvia.ModelError`` subclasses on failure."""
        ...
