"""How fast one customer may post chat messages (``ANVIA_CHAT_MESSAGES_PER_MINUTE``).

One throttle for both ways in, the API and the chat page's form, so they share one count.
"""

from __future__ import annotations

import logging

from django.conf import settings
from rest_framework.exceptions import Throttled
from rest_framework.throttling import UserRateThrottle

logger = logging.getLogger("anvia.limits")


class MessagePostingThrottle(UserRateThrottle):
    scope = "chat_messages"

    def get_rate(self) -> str:
        # Read per request, not frozen into DRF's settings at import: settings overrides apply.
        return f"{settings.ANVIA_CHAT_MESSAGES_PER_MINUTE}/min"

    def allow_request(self, request, view) -> bool:
        try:
            return super().allow_request(request, view)
        except Exception:
            # A limit protects the workers; it must not take posting down when the cache is.
            logger.warning("message throttle: cache unavailable, allowing the message", exc_info=True)
            return True


def message_posting_wait(request) -> float | None:
    """Seconds until this user may post another message, or ``None`` if they may now."""
    throttle = MessagePostingThrottle()
    if throttle.allow_request(request, None):
        return None
    return throttle.wait() or 1.0


class PostingTooFast(Throttled):
    """429 with ``Retry-After`` (set by DRF's exception handler from ``wait``)."""

    default_detail = "You are sending messages too quickly."
    extra_detail_singular = "Wait {wait} second, then send it again."
    extra_detail_plural = "Wait {wait} seconds, then send it again."
