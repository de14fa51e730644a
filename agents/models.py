"""Conversations with an agent, their messages, and the agent runs that answer them."""

from __future__ import annotations

import uuid

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


class AgentRun(models.Model):
    """One agent turn: from the customer's message to the agent's answer."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        WAITING_FOR_APPROVAL = "waiting_for_approval", "Waiting for approval"
        SUSPENDED = "suspended", "Suspended"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    ACTIVE = (Status.RUNNING, Status.WAITING_FOR_APPROVAL)
    FINISHED = (Status.SUCCEEDED, Status.FAILED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="runs")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="agent_runs")
    agent_name = models.CharField(max_length=100)
    status = models.CharField(max_length=24, choices=Status.choices, default=Status.QUEUED)
    state = models.JSONField(null=True, blank=True, help_text="The framework's RunState, saved at each checkpoint.")
    error = models.TextField(blank=True)
    # A worker holds the run while it works on it; a lease that ran out means the worker died.
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    suspended_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

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
