"""Conversations with an agent, their messages, and the agent runs that answer them."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.conf import settings
from django.db import models
from django.db.models import Q


class Conversation(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    agent_name = models.CharField(max_length=100, default="support")
    title = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.pk}"


class AgentRunQuerySet(models.QuerySet):
    """Which runs a worker may take, which are orphaned, and which one a worker still holds.

    The rules of the run lease live here and nowhere else (README "Agent runs").
    """

    def claimable(self, now: datetime) -> AgentRunQuerySet:
        """Queued, suspended, or active under a lease that ran out (its worker died or stalled)."""
        return self.filter(
            Q(status__in=[AgentRun.Status.QUEUED, AgentRun.Status.SUSPENDED])
            | Q(status__in=AgentRun.ACTIVE, lease_expires_at__lt=now)
        )

    def orphaned(self, now: datetime) -> AgentRunQuerySet:
        """Active runs whose worker stopped renewing the lease: a live worker renews it every
        ``ANVIA_RUN_HEARTBEAT_SECONDS``, even while a model call or a tool runs."""
        return self.filter(status__in=AgentRun.ACTIVE, lease_expires_at__lt=now)

    def blocked_on_decision(self, now: datetime) -> AgentRunQuerySet:
        """Runs a live worker holds while it waits for a reviewer's decision."""
        return self.filter(status=AgentRun.Status.WAITING_FOR_APPROVAL, lease_expires_at__gte=now)

    def held(self, run_id, attempt: int) -> AgentRunQuerySet:
        """The run, only while the worker that claimed it as ``attempt`` still holds it: the fence.

        Every write of a worker for a run is ``UPDATE ... WHERE id = run AND attempts = attempt``
        (or starts with one, in the same transaction); a claim by another worker bumps
        ``attempts``, so the old worker's writes then match nothing.
        """
        return self.filter(pk=run_id, attempts=attempt, status__in=AgentRun.ACTIVE)


class AgentRun(models.Model):
    """One agent turn: from the customer's message to the agent's answer."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        WAITING_FOR_APPROVAL = "waiting_for_approval", "Waiting for approval"
        SUSPENDED = "suspended", "Suspended"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        STOPPED = "stopped", "Stopped by a reviewer"

    ACTIVE = (Status.RUNNING, Status.WAITING_FOR_APPROVAL)
    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.STOPPED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="runs")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="agent_runs")
    agent_name = models.CharField(max_length=100)
    status = models.CharField(max_length=24, choices=Status.choices, default=Status.QUEUED)
    state = models.JSONField(null=True, blank=True, help_text="The framework's RunState, saved at each checkpoint.")
    error = models.TextField(blank=True)
    # A worker holds the run while it works on it, renewing the lease on a heartbeat; a lease that
    # ran out means the worker died or stalled.
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(
        default=0, help_text="How many times a worker claimed the run; also the lease's fencing token."
    )
    interrupted_attempts = models.PositiveIntegerField(
        default=0,
        help_text="Claims whose worker stopped before a clean end (died, stalled, lost the lease); "
        "at ANVIA_RUN_MAX_ATTEMPTS the run fails.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    suspended_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = AgentRunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["lease_expires_at"],
                name="agentrun_active_lease",
                condition=Q(status__in=["running", "waiting_for_approval"]),
            ),
            models.Index(fields=["status", "created_at"], name="agentrun_status_created"),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.status})"


class Message(models.Model):
    """What the customer sees in the chat: their messages and the agent's answers."""

    class Role(models.TextChoices):
        USER = "user", "Customer"
        ASSISTANT = "assistant", "Agent"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    run = models.ForeignKey(AgentRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="messages")
    role = models.CharField(max_length=12, choices=Role.choices)
    content = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"


class RunEvent(models.Model):
    """The progress of a run, as the chat shows it (the framework's events)."""

    run = models.ForeignKey(AgentRun, on_delete=models.CASCADE, related_name="events")
    type = models.CharField(max_length=32)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.type} in run {self.run_id}"
