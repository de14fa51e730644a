"""The one small interface every model client implements."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Protocol, runtime_checkable

from anvia.core.messages import ModelReply, ModelRequest


@runtime_checkable
class ModelClient(Protocol):
    """A chat model that may call tools. ``name`` is shown wherever the model is named."""

    name: str

    async def complete(self, request: ModelRequest) -> ModelReply:
        """Answer one request; raise ``anvia.ModelError`` subclasses on failure."""
        ...


def model_session(model: ModelClient) -> AbstractAsyncContextManager:
    """The model's ``session()`` when it has one (calls inside share its connections), else nothing.

    A client may keep resources bound to the running event loop only inside its session; the
    agent opens one around each ``send()``, on the loop that runs it.
    """
    session = getattr(model, "session", None)
    return session() if session is not None else nullcontext()
