"""Reading conversations and runs for their owner, and describing a run's progress in plain words.

Every lookup takes the user: another customer's conversation or run is "does not exist", never
"forbidden", so ids reveal nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db.models import OuterRef, Prefetch, QuerySet, Subquery
from django.db.models.functions import Coalesce, Greatest

from agents.models import AgentRun, Conversation, Message, RunEvent
from agents.plain_words import say

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


# What the conversation list says of a conversation: its last run's state, in the customer's words.
CONVERSATION_STATUS = {
    AgentRun.Status.QUEUED: ("working", "Working"),
    AgentRun.Status.RUNNING: ("working", "Working"),
    AgentRun.Status.WAITING_FOR_APPROVAL: ("waiting", "Waiting for a reviewer"),
    AgentRun.Status.SUSPENDED: ("waiting", "Waiting for a reviewer"),
    AgentRun.Status.SUCCEEDED: ("answered", "Answered"),
    AgentRun.Status.FAILED: ("failed", "Failed"),
    AgentRun.Status.STOPPED: ("stopped", "Stopped by a staff member"),
}
NO_RUN_STATUS = ("new", "No messages yet")


def conversation_list(*, user) -> QuerySet[Conversation]:
    """The user's conversations, the most recently active first, each with ``last_run_status`` and
    ``last_activity`` (the latest of its last message and its last run's progress)."""
    last_run = AgentRun.objects.filter(conversation=OuterRef("pk")).order_by("-created_at")
    return (
        Conversation.objects.filter(user=user)
        .annotate(
            last_run_status=Subquery(last_run.values("status")[:1]),
            last_run_at=Subquery(
                last_run.annotate(at=Coalesce("finished_at", "suspended_at", "started_at", "created_at")).values("at")[
                    :1
                ]
            ),
        )
        .annotate(last_activity=Greatest("updated_at", Coalesce("last_run_at", "updated_at")))
        .order_by("-last_activity", "-id")
    )


def conversation_status(conversation: Conversation) -> tuple[str, str]:
    """``(kind, words)`` for the list: working, waiting for a reviewer, answered, failed, stopped."""
    return CONVERSATION_STATUS.get(getattr(conversation, "last_run_status", None), NO_RUN_STATUS)


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
    # Events a resumed run repeats (the framework announces a pending call again) share a key: the
    # page shows one line per key, live and reloaded alike.
    key: str = ""


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
    items: list[TimelineItem] = []
    seen: set[str] = set()
    for event in events:
        item = timeline_item(event.type, event.data)
        if item is None or (item.key and item.key in seen):
            continue
        seen.add(item.key)
        items.append(item)
    return items


REPEATED_ON_RESUME = ("tool_call", "approval_requested", "approval_decided", "tool_result")


def timeline_item(event_type: str, data: Any) -> TimelineItem | None:
    """What a customer is shown for one run event, in plain words (no tool names, no raw fields:
    each tool's own words come from ``agents.plain_words``); ``None`` for what they need not see."""
    data = data if isinstance(data, dict) else {}
    item = _plain_item(event_type, data)
    if item is None:
        return None
    call_id = data.get("call_id")
    if event_type in REPEATED_ON_RESUME and isinstance(call_id, str) and call_id:
        return TimelineItem(item.kind, item.text, f"{event_type}:{call_id}")
    if event_type == "suspended" and isinstance(data.get("pending"), list):
        return TimelineItem(item.kind, item.text, "suspended:" + ",".join(map(str, sorted(map(str, data["pending"])))))
    return item


def _plain_item(event_type: str, data: dict) -> TimelineItem | None:
    tool = str(data.get("tool_name") or "")
    args = data.get("args") if isinstance(data.get("args"), dict) else {}
    if event_type == "tool_call":
        return TimelineItem("tool_call", say(tool, "doing", args) or "Working on your request…")
    if event_type == "approval_requested":
        asking = say(tool, "asking", args) or "A staff member needs to approve the next step"
        quorum = data.get("quorum")
        if isinstance(quorum, int) and quorum > 1:
            asking += "; a second staff member must agree" if quorum == 2 else f"; {quorum - 1} more staff must agree"
        return TimelineItem("waiting", asking + ".")
    if event_type == "approval_decided":
        return _decision_item(data)
    if event_type == "tool_result":
        return _tool_result_item(tool, data)
    if event_type == "suspended":
        return TimelineItem("waiting", "Paused until a staff member decides; the agent carries on then.")
    if event_type == "error":
        return TimelineItem("error", ERROR_TEXT.get(str(data.get("kind")), ERROR_FALLBACK_TEXT))
    if event_type == "text" and not data.get("final") and data.get("text"):
        return TimelineItem("note", str(data["text"]))
    return None


def _decision_item(data: dict) -> TimelineItem | None:
    message = str(data.get("message") or "").strip()
    if data.get("action") == "terminate":
        return TimelineItem("rejected", "A staff member stopped this request.")
    if data.get("action") == "respond":
        return TimelineItem("approved", "A staff member answered instead.")
    if data.get("approved"):
        # The line of what was done says "Approved — …"; the reviewer's note is for the model (it
        # names arguments): the customer only learns that something was changed.
        return TimelineItem("approved", "A staff member approved it with a change.") if message else None
    return TimelineItem("rejected", f"Not approved: {message}" if message else "Not approved.")


def _tool_result_item(tool: str, data: dict) -> TimelineItem | None:
    outcome = data.get("outcome")
    message = str(data.get("message") or "").strip()
    approved = bool(data.get("requires_approval"))
    if outcome == "ran":
        done = say(tool, "done", data.get("result"))
        if approved:
            return TimelineItem("result", f"Approved — {done}." if done else "Approved — done.")
        return TimelineItem("result", _sentence(done)) if done else None
    if outcome == "responded":
        return None  # the decision's line said so
    if outcome == "skipped" and (data.get("policy") or {}).get("outcome") == "deny":
        # The policy's message is the tool author's words, written for whoever asked.
        return TimelineItem("rejected", f"Not allowed: {message}" if message else "Not allowed by the shop's policy.")
    if outcome == "skipped":
        # With approval, the decision's line gave the reason.
        return None if approved else TimelineItem("skipped", "This step was skipped.")
    if outcome == "invalid":
        # The framework's message names the tool and its fields: for the model, not the customer.
        return TimelineItem("error", "The agent asked for something it could not do, and is trying again.")
    prefix = "Approved, but it could not be done" if approved else "That did not work"
    return TimelineItem("error", f"{prefix}: {message}" if message else f"{prefix}.")


def _sentence(text: str) -> str:
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "…", "!", "?")) else text + "."
