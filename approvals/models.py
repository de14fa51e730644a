"""Approval records and their append-only event log."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class ApprovalQuerySet(models.QuerySet):
    def for_call(self, *, run_id: str, call_id: str) -> ApprovalQuerySet:
        """The approval a run's call is judged by now (not one superseded by a changed tool or policy)."""
        return self.filter(run_id=run_id, call_id=call_id, superseded=False)


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

    # The policy that asked, and what it saw (see anvia.core.policies).
    policy_rule = models.CharField(max_length=200, blank=True, help_text="The policy rule that asked for review.")
    facts = models.JSONField(default=dict, blank=True, help_text="What the app knew about the call when it was asked.")
    quorum = models.PositiveSmallIntegerField(default=1, help_text="How many distinct reviewers must approve.")
    # Who may decide (beyond the reviewer permission): the tool's group and/or permission.
    reviewer_group = models.CharField(max_length=150, blank=True)
    reviewer_permission = models.CharField(max_length=255, blank=True)
    escalate_to = models.CharField(max_length=150, blank=True, help_text="The group asked too once escalate_at passes.")
    escalate_at = models.DateTimeField(null=True, blank=True)
    escalated_at = models.DateTimeField(null=True, blank=True)
    # Freshness: the tool (name + input schema) and the policy this approval was asked under.
    tool_fingerprint = models.CharField(max_length=64, blank=True)
    policy_fingerprint = models.CharField(max_length=64, blank=True)
    superseded = models.BooleanField(
        default=False, help_text="The tool or its policy changed before the call ran: it was asked again."
    )
    # What a standing grant given on this call may count and be limited to (the tool's terms).
    grant_amount_arg = models.CharField(max_length=100, blank=True)
    grant_scope = models.JSONField(default=list, blank=True)
    grant = models.ForeignKey(
        "Grant",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="approvals",
        help_text="The standing grant that approved this call without review.",
    )
    receipt = models.JSONField(
        null=True,
        blank=True,
        help_text="What ran: the approval(s) or grant -> the args hash -> the idempotency key -> the result.",
    )

    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    executed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.JSONField(null=True, blank=True, help_text="What happened when the tool ran or was skipped.")

    objects = ApprovalQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        permissions = [("decide_approval", "Can approve or reject tool calls")]
        constraints = [
            models.UniqueConstraint(
                fields=["run_id", "call_id"], condition=Q(superseded=False), name="approval_unique_current_run_call"
            )
        ]
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
    def approvers(self) -> list[str]:
        """Usernames of the reviewers who approved it so far, in order (uses prefetched ``votes``)."""
        if self.quorum <= 1:
            approved = self.status == self.Status.APPROVED and self.action == self.Action.APPROVE
            return [self.decided_by.get_username()] if approved and self.decided_by_id else []
        return [vote.reviewer.get_username() for vote in self.votes.all()]

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
        VOTED = "voted", "Approved by one reviewer of the quorum"
        ESCALATED = "escalated", "Escalated"
        SUPERSEDED = "superseded", "Superseded"
        GRANTED = "granted", "Standing grant given"

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


class ApprovalVote(models.Model):
    """One reviewer's approval of a call that needs several (``Approval.quorum``)."""

    approval = models.ForeignKey(Approval, on_delete=models.CASCADE, related_name="votes")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="approval_votes")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["approval", "reviewer"], name="approval_vote_once")]

    def __str__(self) -> str:
        return f"{self.reviewer} approved #{self.approval_id}"


class Grant(models.Model):
    """A standing grant: a reviewer lets later calls of one tool for one customer run without
    review, within a total, a time and a number of uses. Revocable; never covers the grantor's
    own requests."""

    tool_name = models.CharField(max_length=100)
    customer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="grants_received")
    match_args = models.JSONField(
        default=dict, blank=True, help_text="Arguments a covered call must have exactly, e.g. the order number."
    )
    amount_arg = models.CharField(max_length=100, blank=True, help_text="The argument counted against max_total.")
    max_total = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    max_uses = models.PositiveIntegerField()
    used_total = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    used_count = models.PositiveIntegerField(default=0)
    tool_fingerprint = models.CharField(max_length=64, blank=True)
    granted_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="grants_given")
    from_approval = models.ForeignKey(
        Approval, null=True, blank=True, on_delete=models.SET_NULL, related_name="grants_given"
    )
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="grants_revoked"
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tool_name", "customer", "expires_at"], name="grant_lookup")]

    def __str__(self) -> str:
        return f"grant #{self.pk} {self.tool_name} for {self.customer}"


class PolicyCheck(models.Model):
    """What a tool's policy decided for one call (allow, deny or ask), and what it saw: the audit
    trail of calls that ran without review, and the history ``approvals_replay`` tries rules on."""

    class Outcome(models.TextChoices):
        ALLOW = "allow", "Allowed without review"
        DENY = "deny", "Denied by policy"
        ASK = "ask", "Asked a reviewer"

    run_id = models.CharField(max_length=64)
    call_id = models.CharField(max_length=255)
    agent_name = models.CharField(max_length=100, blank=True)
    conversation_id = models.CharField(max_length=64, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="policy_checks"
    )
    tool_name = models.CharField(max_length=100)
    args = models.JSONField()
    args_hash = models.CharField(max_length=64)
    facts = models.JSONField(default=dict, blank=True)
    outcome = models.CharField(max_length=8, choices=Outcome.choices)
    rule = models.CharField(max_length=200, blank=True)
    reason = models.TextField(
        blank=True, help_text="Why (allow), what the reviewer read (ask), what the model was told (deny)."
    )
    quorum = models.PositiveSmallIntegerField(default=1)
    tool_fingerprint = models.CharField(max_length=64, blank=True)
    policy_fingerprint = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["tool_name", "created_at"], name="policycheck_tool_created"),
            models.Index(fields=["run_id", "call_id"], name="policycheck_run_call"),
        ]

    def __str__(self) -> str:
        return f"{self.tool_name} {self.outcome} ({self.rule})"
