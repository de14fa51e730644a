"""What Studio's page reads: agents, chats with their run timelines, approvals. Plain JSON values."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from django.db.models import Exists, OuterRef, Subquery

from agents.models import AgentRun, Conversation, Message, RunEvent
from anvia import Agent
from anvia.studio.runs import studio_approvals, studio_run_id, studio_runs_all
from approvals.models import Approval

CHATS_LISTED = 100
RUNS_SHOWN = 50
RECENT_DECISIONS = 5


def agent_summary(agent: Agent) -> dict[str, Any]:
    """An agent as the page shows it, with what each tool's approval metadata says."""
    return {
        "name": agent.name,
        "description": agent.description,
        "model": model_label(agent),
        "tools": [
            {
                "name": tool.name,
                "description": tool.description,
                "approval": _approval_rule(tool.approval),
                "reject_message": tool.approval.reject_message if tool.approval else None,
            }
            for tool in agent.tools.values()
        ],
    }


def model_label(agent: Agent) -> str:
    """The agent's model by name, as the page and the banner show it."""
    try:
        return str(getattr(agent.model, "name", "") or type(agent.model).__name__)
    except Exception as error:
        # A model whose settings are broken still lets the page load; the run will say more.
        return f"model unavailable ({error})"


def _approval_rule(approval) -> str:
    if approval is None:
        return "none"
    return "always" if approval.when is None else "rule"


def studio_conversations():
    """Conversations that have a Studio run, most recently active first."""
    latest = AgentRun.objects.filter(conversation=OuterRef("pk")).order_by("-created_at")
    return (
        Conversation.objects.filter(Exists(studio_runs_all().filter(conversation=OuterRef("pk"))))
        .select_related("user")
        .annotate(last_status=Subquery(latest.values("status")[:1]))
        .order_by("-updated_at", "-id")
    )


def chat_list(*, agents: dict[str, Agent]) -> list[dict[str, Any]]:
    """Studio's chats, newest activity first, with their last run's status and pending approvals."""
    conversations = list(studio_conversations()[:CHATS_LISTED])
    pending = defaultdict(int)
    for conversation_id in (
        studio_approvals().filter(status=Approval.Status.PENDING).values_list("conversation_id", flat=True)
    ):
        pending[conversation_id] += 1
    return [
        {
            **_chat_head(conversation, agents=agents),
            "status": conversation.last_status,
            "pending_approvals": pending[str(conversation.pk)],
        }
        for conversation in conversations
    ]


def chat_detail(*, conversation_id: int, agents: dict[str, Agent]) -> dict[str, Any] | None:
    """One chat with the timeline of each run (its events, approvals, question and answer)."""
    conversation = studio_conversations().filter(pk=conversation_id).first()
    if conversation is None:
        return None
    runs = list(conversation.runs.order_by("-created_at")[:RUNS_SHOWN])[::-1]
    events = defaultdict(list)
    for event in RunEvent.objects.filter(run__in=runs).order_by("created_at", "id"):
        events[event.run_id].append(event)
    messages = {(m.run_id, m.role): m.content for m in Message.objects.filter(run__in=runs)}
    approvals = {
        (a.run_id, a.call_id): a
        for a in studio_approvals()
        .filter(run_id__in=[studio_run_id(r.pk) for r in runs])
        .select_related("decided_by", "requested_by")
    }
    return {
        **_chat_head(conversation, agents=agents),
        "status": conversation.last_status,
        "runs": [
            {
                "id": str(run.pk),
                "status": run.status,
                "error": run.error,
                "created_at": _iso(run.created_at),
                "finished_at": _iso(run.finished_at),
                "message": messages.get((run.pk, Message.Role.USER), ""),
                "answer": messages.get((run.pk, Message.Role.ASSISTANT)),
                "events": [_event(e, run=run, approvals=approvals) for e in events[run.pk]],
            }
            for run in runs
        ],
    }


def _chat_head(conversation: Conversation, *, agents: dict[str, Agent]) -> dict[str, Any]:
    return {
        "id": conversation.pk,
        "agent": conversation.agent_name,
        "agent_loaded": conversation.agent_name in agents,
        "user": conversation.user.get_username(),
        "title": conversation.title,
        "updated_at": _iso(conversation.updated_at),
    }


def _event(event: RunEvent, *, run: AgentRun, approvals: dict) -> dict[str, Any]:
    item = {"type": event.type, "data": event.data, "at": _iso(event.created_at)}
    if event.type in ("approval_requested", "approval_decided"):
        approval = approvals.get((studio_run_id(run.pk), event.data.get("call_id")))
        item["approval"] = approval_summary(approval) if approval else None
    return item


def approvals_panel() -> dict[str, list[dict[str, Any]]]:
    """Pending Studio approvals, oldest first, and the latest few decided."""
    rows = studio_approvals().select_related("requested_by", "decided_by")
    pending = rows.filter(status=Approval.Status.PENDING).order_by("created_at", "id")
    recent = rows.exclude(status=Approval.Status.PENDING).order_by("-decided_at", "-id")[:RECENT_DECISIONS]
    return {"pending": [approval_summary(a) for a in pending], "recent": [approval_summary(a) for a in recent]}


def approval_summary(approval: Approval) -> dict[str, Any]:
    """An approval as the panel and the timeline show it: reason, arguments, who decided and why."""
    return {
        "id": approval.pk,
        "status": approval.status,
        "tool_name": approval.tool_name,
        "agent": approval.agent_name,
        "conversation_id": int(approval.conversation_id) if approval.conversation_id.isdigit() else None,
        "requested_by": approval.requested_by.get_username() if approval.requested_by else None,
        "reason": approval.reason,
        "args": approval.args,
        "reject_message": approval.reject_message,
        "created_at": _iso(approval.created_at),
        "expires_at": _iso(approval.expires_at),
        "decided_by": approval.decided_by.get_username() if approval.decided_by else None,
        "decided_at": _iso(approval.decided_at),
        "decision_reason": approval.decision_reason,
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
