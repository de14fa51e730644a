"""Reading conversations and runs for their owner, and describing a run's progress in plain words.

Every lookup takes the user: another customer's conversation or run is "does not exist", never
"forbidden", so ids reveal nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Prefetch, QuerySet

from agents.models import AgentRun, Conversation, Message, RunEvent

VALUE_PREVIEW_CHARS = 200

RUN_STATUS_TEXT = {
    AgentRun.Status.QUEUED: "The agent is working…",
    AgentRun.Status.RUNNING: "The agent is working…",
    AgentRun.Status.WAITING_FOR_APPROVAL: "Waiting for a reviewer…",
    AgentRun.Status.SUSPENDED: (
        "Still waiting for a reviewer. You can leave this page: the answer will be here when you come back."
    ),
}

ERROR_TEXT = {
    "ModelError": "The assistant could not be reached.",
    "ModelUnavailableError": "The assistant could not be reached.",
    "ModelNotFoundError": "The assistant is not set up correctly.",
    "ModelResponseError": "The assistant gave an answer that could not be read.",
    "ToolExecutionError": "Something went wrong while acting on your request.",
    "MaxStepsExceeded": "The agent took too many steps and stopped.",
}
ERROR_FALLBACK_TEXT = "The agent stopped because of an error."


def conversation_list(*, user) -> QuerySet[Conversation]:
    """The user's conversations, the most recently active first."""
    return Conversation.objects.filter(user=user).order_by("-updated_at", "-id")


def conversation_get(*, user, conversation_id: int) -> Conversation:
    """The user's own conversation; ``Conversation.DoesNotExist`` for anyone else's."""
    return Conversation.objects.get(pk=conversation_id, user=user)


def conversation_owner_id(*, conversation_id: int) -> int | None:
    """Whose conversation this is; ``None`` when there is no such conversation."""
    return Conversation.objects.filter(pk=conversation_id).values_list("user_id", flat=True).first()


def conversation_messages(*, conversation: Conversation) -> QuerySet[Message]:
    return conversation.messages.order_by("created_at", "id")


def run_get(*, user, run_id) -> AgentRun:
    """The user's own run with its events and messages; ``AgentRun.DoesNotExist`` for anyone else's."""
    return (
        AgentRun.objects.filter(user=user)
        .prefetch_related(
            Prefetch("events", queryset=RunEvent.objects.order_by("created_at", "id")),
            Prefetch("messages", queryset=Message.objects.order_by("created_at", "id")),
        )
        .get(pk=run_id)
    )


def run_answer(run: AgentRun) -> str | None:
    """The agent's answer to the run (a failure's plain-words text too), once there is one."""
    answers = [m for m in run.messages.all() if m.role == Message.Role.ASSISTANT]
    return answers[-1].content if answers else None


def run_error_visible_to(user) -> bool:
    """Whether ``user`` may read a failed run's technical error (hosts, model messages): staff only;
    customers read the plain-words answer."""
    return bool(getattr(user, "is_staff", False))


def run_is_finished(run: AgentRun) -> bool:
    return run.status in AgentRun.FINISHED


# ---------------------------------------------------------------------------------------------
# The chat's history: one turn per customer message, with its run's timeline and answer.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineItem:
    kind: str
    text: str


@dataclass
class Turn:
    question: Message | None
    run: AgentRun | None = None
    timeline: list[TimelineItem] = field(default_factory=list)
    answer: Message | None = None

    @property
    def finished(self) -> bool:
        return self.run is None or run_is_finished(self.run)

    @property
    def failed(self) -> bool:
        """Ended without the answer asked for: failed, or stopped by a reviewer."""
        return self.run is not None and self.run.status in (AgentRun.Status.FAILED, AgentRun.Status.STOPPED)

    @property
    def status_text(self) -> str:
        return "" if self.finished else RUN_STATUS_TEXT.get(self.run.status, "")


def conversation_turns(*, conversation: Conversation) -> list[Turn]:
    """The history as the chat page shows it, in order, in two queries."""
    runs = {
        run.pk: run
        for run in conversation.runs.prefetch_related(
            Prefetch("events", queryset=RunEvent.objects.order_by("created_at", "id"))
        )
    }
    turns: list[Turn] = []
    by_run: dict[Any, Turn] = {}
    for message in conversation_messages(conversation=conversation):
        turn = by_run.get(message.run_id) if message.run_id else None
        if turn is None:
            run = runs.get(message.run_id)
            turn = Turn(question=None, run=run, timeline=run_timeline(run.events.all()) if run else [])
            turns.append(turn)
            if run is not None:
                by_run[run.pk] = turn
        if message.role == Message.Role.USER and turn.question is None:
            turn.question = message
        else:
            turn.answer = message
    return turns


# ---------------------------------------------------------------------------------------------
# Plain words for a run's events. The chat page, the websocket and the API all use these, so a
# reload reads exactly like what was shown live.
# ---------------------------------------------------------------------------------------------


def run_timeline(events) -> list[TimelineItem]:
    return [item for event in events if (item := timeline_item(event.type, event.data)) is not None]


def timeline_item(event_type: str, data: Any) -> TimelineItem | None:
    """What a customer is shown for one run event; ``None`` for bookkeeping they need not see."""
    data = data if isinstance(data, dict) else {}
    tool = str(data.get("tool_name") or "a tool")
    if event_type == "tool_call":
        arguments = _describe_value(data.get("args"))
        return TimelineItem("tool_call", f"Calling {tool}" + (f": {arguments}" if arguments else ""))
    if event_type == "approval_requested":
        reason = str(data.get("reason") or "").strip() or f"{tool} needs approval."
        return TimelineItem("waiting", f"Waiting for a reviewer: {reason}")
    if event_type == "approval_decided":
        message = str(data.get("message") or "").strip()
        if data.get("action") == "terminate":
            return TimelineItem("rejected", "A staff member stopped this request.")
        if data.get("action") == "respond":
            return TimelineItem("approved", "A staff member answered instead.")
        if data.get("approved"):
            # The reviewer's note is for the model (it names arguments); the customer reads the answer.
            return TimelineItem(
                "approved", "Approved by a reviewer, with a change" if message else "Approved by a reviewer"
            )
        return TimelineItem("rejected", f"Not approved: {message}" if message else "Not approved.")
    if event_type == "tool_result":
        return _tool_result_item(tool, data)
    if event_type == "suspended":
        return TimelineItem("waiting", "Paused until a reviewer decides; the agent carries on then.")
    if event_type == "error":
        return TimelineItem("error", ERROR_TEXT.get(str(data.get("kind")), ERROR_FALLBACK_TEXT))
    if event_type == "text" and not data.get("final") and data.get("text"):
        return TimelineItem("note", str(data["text"]))
    return None


def _tool_result_item(tool: str, data: dict) -> TimelineItem:
    outcome = data.get("outcome")
    message = str(data.get("message") or "").strip()
    if outcome == "ran":
        result = _describe_value(data.get("result"))
        return TimelineItem("result", f"{tool} finished" + (f": {result}" if result else "."))
    if outcome == "responded":
        return TimelineItem("result", f"{tool} was answered by a staff member.")
    if outcome == "skipped":
        # The reason was shown with the decision that caused it.
        return TimelineItem("skipped", f"{tool} was not run.")
    if outcome == "invalid":
        return TimelineItem("error", f"The agent asked {tool} for something it could not do: {message}")
    return TimelineItem("error", f"{tool} did not work: {message}" if message else f"{tool} did not work.")


def _describe_value(value: Any) -> str:
    if value is None or value == {} or value == []:
        return ""
    if isinstance(value, dict):
        # Sorted: PostgreSQL's jsonb does not keep key order, and a reload must read like live.
        text = ", ".join(f"{key}: {_scalar(value[key])}" for key in sorted(value))
    else:
        text = _scalar(value)
    return text if len(text) <= VALUE_PREVIEW_CHARS else text[: VALUE_PREVIEW_CHARS - 1] + "…"


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)
