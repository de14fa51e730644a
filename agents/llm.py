"""The model the settings name, created on first use so importing an agent needs no settings."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from functools import cached_property

from django.conf import settings

from anvia import ModelClient, create_model
from anvia.core.messages import ModelReply, ModelRequest
from anvia.core.models import TextPieceSink, model_session


class SettingsModel:
    """``ANVIA_MODEL`` on ``OPENAI_BASE_URL`` (``offline``: the offline demo model).

    Keeping one client object for the process is safe: the OpenAI-compatible client binds nothing
    to an event loop outside a run's ``session()``.
    """

    @cached_property
    def client(self) -> ModelClient:
        return create_model(
            settings.ANVIA_MODEL,
            base_url=settings.OPENAI_BASE_URL or None,
            api_key=settings.OPENAI_API_KEY or None,
            timeout=settings.ANVIA_MODEL_TIMEOUT_SECONDS,
            max_retries=settings.ANVIA_MODEL_MAX_RETRIES,
            tool_choice=settings.ANVIA_MODEL_TOOL_CHOICE,
            temperature=settings.ANVIA_MODEL_TEMPERATURE,
            seed=settings.ANVIA_MODEL_SEED,
            max_tokens=settings.ANVIA_MODEL_MAX_TOKENS,
            streaming=settings.ANVIA_MODEL_STREAMING,
            offline_word_delay=settings.ANVIA_OFFLINE_WORD_DELAY_SECONDS,
        )

    @property
    def name(self) -> str:
        return self.client.name

    def session(self) -> AbstractAsyncContextManager:
        return model_session(self.client)

    async def complete(self, request: ModelRequest) -> ModelReply:
        return await self.client.complete(request)

    async def stream(self, request: ModelRequest, on_text: TextPieceSink) -> ModelReply:
        stream = getattr(self.client, "stream", None)
        if stream is None:
            return await self.client.complete(request)
        return await stream(request, on_text)
