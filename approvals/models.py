"""Approval records and their append-only event log."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class Approval(models.Model):
    """One protected tool call waiting for (or given) a person's decision."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        EXPIRED = "expired", "Expired"
        CANCELLED = "cancelled", "Cancelled"

    run_id = models.CharField(max_length=64)
    call_id = models.CharField(max_length=255)
    agent_name = models.CharField(max_length=100, blank=True)
    conversation_id = models.CharField(max_length=64, blank=True, db_index=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="approval_requests"
    )
    tool_name = models.CharField(max_length=100)
    args = models.JSONField(help_text="The model's arguments, validated, as canonical JSON.")
    args_hash = models.CharField(max_length=64, help_text="sha256 of the canonical JSON of args.")
    input_schema = models.JSONField(default=dict, blank=True, help_text="The tool's input JSON schema, for edits.")
    reason = models.TextField(help_text="What the reviewer is asked, from the tool's approval rule.")
    required_by_rule = models.BooleanField(
        null=True, help_text="The approval rule's verdict at request time; empty when a hook asked without a rule."
    )
    reject_message = models.TextField(blank=True, help_text="What the model is told if the call is refused.")
    conversation_excerpt = models.JSONField(default=list, blank=True)
    preview = models.JSONField(
        null=True, blank=True, help_text="What the tool's preview showed the reviewer when the call was asked for."
    )

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="approval_decisions"
    )

    class Action(models.TextChoices):
        APPROVE = "approve", "Approve"
        REJECT = "reject", "Reject"
        RESPOND = "respond", "Respond instead of the tool"
        TERMINATE = "terminate", "Stop the whole run"

    action = models.CharField(
        max_length=16, choices=Action.choices, blank=True, help_text="What the reviewer decided; empty until then."
    )
    decision_reason = models.TextField(blank=True)
    response = models.TextField(blank=True, help_text="respond: what the model received instead of the tool's result.")
    edited_args = models.JSONField(null=True, blank=True, help_text="The args a reviewer approved instead, if edited.")

    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    executed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.JSONField(null=True, blank=True, help_text="What happened when the tool ran or was skipped.")

    class Meta:
        ordering = ["-created_at"]
        permissions = [("decide_approval", "Can approve or reject tool calls")]
        constraints = [models.UniqueConstraint(fields=["run_id", "call_id"], name="approval_unique_run_call")]
        indexes = [
            # The reviewer queue and the expiry sweep read only pending rows: keep those indexes small.
            models.Index(fields=["created_at"], name="approval_pending_created", condition=Q(status="pending")),
            models.Index(fields=["expires_at"], name="approval_pending_expires", condition=Q(status="pending")),
            models.Index(fields=["status", "-created_at"], name="approval_status_created"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.tool_name} ({self.status})"

    @property
    def is_pending(self) -> bool:
        return self.status == self.Status.PENDING

    @property
    def approved_args(self) -> dict:
        """The arguments the tool runs with when approved."""
        return self.edited_args if self.edited_args is not None else self.args


class ApprovalEvent(models.Model):
    """What happened to an approval, in order. Rows are only ever added."""

    class Kind(models.TextChoices):
        REQUESTED = "requested", "Requested"
        NOTIFIED = "notified", "Reviewers notified"
        DECIDED = "decided", "Decided"
        EXPIRED = "expired", "Expired"
        CANCELLED = "cancelled", "Cancelled"
        EXECUTED = "executed", "Executed"

    approval = models.ForeignKey(Approval, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.kind} at {self.created_at:%Y-%m-%d %H:%M:%S}"


class ReviewerPreference(models.Model):
    """How one reviewer wants to hear about new requests beyond the open queue page."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reviewer_preference")
    email = models.BooleanField(default=True, help_text="Email me when a request I may decide is waiting.")

    def __str__(self) -> str:
        return f"{self.user} (email {'on' if self.email else 'off'})"
