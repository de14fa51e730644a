"""Model clients: the OpenAI-compatible client and the offline demo model."""

from __future__ import annotations

from anvia.core.models.base import ModelClient, StreamingModelClient, TextPieceSink, model_session
from anvia.core.models.offline import OfflineModel
from anvia.core.models.openai_compatible import OpenAICompatibleModel

OFFLINE_MODEL_NAMES = {"", "offline", "offline-demo"}


def create_model(
    name: str | None,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    timeout: float = 60.0,
    max_retries: int = 2,
    tool_choice: str = "auto",
    temperature: float | None = None,
    seed: int | None = None,
    max_tokens: int | None = None,
    streaming: bool = True,
    offline_word_delay: float = 0.0,
) -> ModelClient:
    """The model a setting names: ``offline`` (or nothing) for the offline demo model (streaming
    ``offline_word_delay`` seconds a word), else the model name on an OpenAI-compatible server at
    ``base_url``, with these request options (``streaming=False``: never ask it to stream)."""
    if (name or "").strip().lower() in OFFLINE_MODEL_NAMES:
        return OfflineModel(word_delay=offline_word_delay)
    return OpenAICompatibleModel(
        model=name,
        base_url=base_url or None,
        api_key=api_key,
        timeout=timeout,
        max_retries=max_retries,
        tool_choice=tool_choice,
        temperature=temperature,
        seed=seed,
        max_tokens=max_tokens,
        streaming=streaming,
    )


__all__ = [
    "ModelClient",
    "OfflineModel",
    "OpenAICompatibleModel",
    "StreamingModelClient",
    "TextPieceSink",
    "create_model",
    "model_session",
]
