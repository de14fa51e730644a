"""How a customer reads a tool's calls: each agent module says it for its own tools, so the chat's
wording (``agents.selectors.timeline_item``) names no tool and shows no raw arguments.

``doing(args)`` when the call is made ("Checking your order A-1001…"), ``asking(args)`` when it
waits for a staff member ("A staff member needs to approve this $131.00 refund"), ``done(result)``
when it ran ("Refund RF-2 made"). ``args`` and ``result`` are the event's JSON, written by a model or
a tool: read them defensively; whatever raises falls back to general words.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agents.registry import all_agents

logger = logging.getLogger("anvia.agents")

_WORDS: dict[str, ToolWords] = {}


@dataclass(frozen=True)
class ToolWords:
    doing: Callable[[dict[str, Any]], str] | None = None
    asking: Callable[[dict[str, Any]], str] | None = None
    done: Callable[[Any], str] | None = None


def tool_words(**words: ToolWords) -> None:
    """Declare the plain words of tools, by tool name (next to the tools, in the agent's module)."""
    _WORDS.update(words)


def say(tool_name: str, part: str, value: Any) -> str | None:
    """The tool's own words for ``part`` (``doing``, ``asking`` or ``done``); ``None`` when it has none."""
    all_agents()  # importing the agents declares their words
    words = _WORDS.get(tool_name)
    describe = getattr(words, part, None)
    if describe is None:
        return None
    try:
        text = describe(value if value is not None else {})
    except Exception:
        logger.debug("the plain words of %s (%s) did not fit this call", tool_name, part, exc_info=True)
        return None
    return str(text).strip() or None
