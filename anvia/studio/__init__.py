"""Anvia Studio: try agents locally and approve their protected tool calls in a browser.

    from anvia.studio import Studio

    Studio([support_agent]).start(port=4021)

Studio is framework code: it imports nothing of a project and sets no framework up. It keeps
approval requests in a ``MemoryStore`` unless given another ``ApprovalStore`` (``store=``), for
instance one that records them where a project's admin shows them.
"""

from __future__ import annotations

from anvia.studio.server import RunningStudio, Studio
from anvia.studio.store import (
    ACTIONS,
    ActingUser,
    Action,
    AlreadyDecided,
    ApprovalNotFound,
    ApprovalRecord,
    ApprovalRequest,
    ApprovalStore,
    DecisionRefused,
    InvalidDecision,
    MemoryStore,
    StoreError,
)

__all__ = [
    "ACTIONS",
    "ActingUser",
    "Action",
    "AlreadyDecided",
    "ApprovalNotFound",
    "ApprovalRecord",
    "ApprovalRequest",
    "ApprovalStore",
    "DecisionRefused",
    "InvalidDecision",
    "MemoryStore",
    "RunningStudio",
    "StoreError",
    "Studio",
]
