"""The model the settings name, created on first use so importing an agent needs no settings."""

from __future__ import annotations

from functools import cached_property

from django.conf import settings

from anvia import ModelClient, create_model
from anvia.core.messages import ModelReply, ModelRequest


class SettingsModel:
    """``ANVIA_MODEL`` on ``OPENAI_BASE_URL`` (``offline``: the offline demo model)."""

    @cached_property
    def client(self) -> ModelClient:
        return create_model(
            settings.ANVIA_MODEL,
            base_url=settings.OPENAI_BASE_URL or None,
            api_key=settings.OPENAI_API_KEY or None,
            timeout=settings.ANVIA_MODEL_TIMEOUT_SECONDS,
        )

    @property
    def name(self) -> str:
        return self.client.name

    async def complete(self, request: ModelRequest) -> ModelReply:
        return await self.client.complete(request)
