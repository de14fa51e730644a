"""The one small interface every model client implements."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
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


TextPieceSink = Callable[[str], Awaitable[None]]
"""Receives each piece of a reply's text as the model writes it."""


@runtime_checkable
class StreamingModelClient(ModelClient, Protocol):
    """A model client that can also hand over its answer's text piece by piece as it is written.

    The agent uses ``stream()`` instead of ``complete()`` when its run has an event sink (someone
    to show the pieces to), and emits a ``text_delta`` event per piece.
    """

    async def stream(self, request: ModelRequest, on_text: TextPieceSink) -> ModelReply:
        """Answer like ``complete()``, awaiting ``on_text(piece)`` for each piece of the text as it
        arrives; the reply's ``text`` is the pieces joined. Tool calls come whole in the reply."""
        ...


def model_session(model: ModelClient) -> AbstractAsyncContextManager:
    """The model's ``session()`` when it has one (calls inside share its connections), else nothing.

    A client may keep resources bound to the running event loop only inside its session; the
    agent opens one around each ``send()``, on the loop that runs it.
    """
    session = getattr(model, "session", None)
    return session() if session is not None else nullcontext()
