"""What a customer's request can be refused for; each carries its HTTP status (see anvia_project.errors)."""

from __future__ import annotations

from typing import Any

from anvia_project.errors import ApplicationError


class MessageRefused(ApplicationError):
    """The message itself is wrong: empty, too long, or holding what cannot be stored."""

    field = "content"


class ConversationBusy(ApplicationError):
    """The conversation's last run has not finished; ``run`` is that run."""

    status_code = 409
    code = "conversation_busy"

    def __init__(self, run):
        self.run = run
        super().__init__(
            "The agent is still answering your last message. Wait for its answer before sending another, "
            "or start a new conversation."
        )

    def body(self) -> dict[str, Any]:
        return {**super().body(), "run_id": str(self.run.pk)}
