"""The approval runtime: request, wait, decide, expire. Views, admin, tasks and hooks call these."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any, NoReturn

import jsonschema
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from anvia.core.decisions import DecisionError, decision_action
from approvals.arg_schema import schema_error_text
from approvals.decision_channels import get_decision_channel
from approvals.errors import (
    AlreadyDecided,
    AlreadyVoted,
    ApprovalError,
    ApprovalExpired,
    ApprovalMismatch,
    InvalidDecision,
    InvalidEditedArgs,
    NotAReviewer,
    NotRoutedToReviewer,
    SelfApprovalRefused,
    TooManyPendingApprovals,
)
from approvals.grants import GrantTerms, grant_decision_fields, grant_give, grant_terms_checked, grant_use
from approvals.models import Approval, ApprovalEvent, ApprovalVote
from approvals.notifications import notify_reviewers
from approvals.reviewers import approval_routed_to, routing_refusal_text
from approvals.selectors import result_ids
from approvals.signals import approval_decided

logger = logging.getLogger("anvia.approvals")

DECIDE_PERMISSION = "approvals.decide_approval"
EXPIRED_REASON = "expired"


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def args_hash(args: Any) -> str:
    return hashlib.sha256(canonical_json(args).encode()).hexdigest()


@dataclass(frozen=True)
class ApprovalRequest:
    """What a run asks a person to approve."""

    run_id: str
    call_id: str
    tool_name: str
    args: dict[str, Any]
    reason: str
    reject_message: str = ""
    agent_name: str = ""
    conversation_id: str = ""
    requested_by_id: int | None = None
    required_by_rule: bool | None = True
    input_schema: dict[str, Any] = field(default_factory=dict)
    conversation_excerpt: list[dict[str, Any]] = field(default_factory=list)
    preview: dict[str, Any] | None = None
    # The policy that asked and what it saw; who may decide; the tool's terms for grants.
    policy_rule: str = ""
    facts: dict[str, Any] = field(default_factory=dict)
    quorum: int = 1
    reviewer_group: str = ""
    reviewer_permission: str = ""
    escalate_after: float | None = None
    escalate_to: str = ""
    tool_fingerprint: str = ""
    policy_fingerprint: str = ""
    grant_amount_arg: str = ""
    grant_scope: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    """What the waiting run needs to know. ``args`` are exactly what to run with when approved;
    ``tool_name`` and ``args_hash`` say which call it was asked for (see ``approval_call_mismatch``)."""

    approval_id: int
    status: str
    reason: str
    decided_by: str | None
    args: dict[str, Any]
    edited: bool
    tool_name: str = ""
    args_hash: str = ""
    action: str = ""
    response: str = ""

    @property
    def approved(self) -> bool:
        return self.status == Approval.Status.APPROVED

    @classmethod
    def of(cls, approval: Approval) -> Decision:
        return cls(
            approval_id=approval.pk,
            status=approval.status,
            reason=approval.decision_reason,
            decided_by=approval.decided_by.get_username() if approval.decided_by_id else None,
            args=approval.approved_args,
            edited=approval.edited_args is not None,
            tool_name=approval.tool_name,
            args_hash=approval.args_hash,
            action=approval.action,
            response=approval.response,
        )


def approval_call_mismatch(*, asked_tool: str, asked_args_hash: str, tool_name: str, args: Any) -> str | None:
    """Why an approval asked for ``asked_tool`` with args hashing to ``asked_args_hash`` does not
    belong to the call ``tool_name(args)``, or ``None`` if it does.

    An approval is found by run id + call id, and some model servers reuse call ids (``call_0``)
    across a crash: a decision acts only on the call it was made for.
    """
    if asked_tool != tool_name:
        return f"the approval on record for this call id was asked for {asked_tool}, not {tool_name}"
    if asked_args_hash != args_hash(args):
        return f"the approval on record for this call id was asked for {asked_tool} with other arguments"
    return None


def approval_request(*, request: ApprovalRequest) -> tuple[Approval, bool]:
    """Create the pending record for this run + call, or find the one a retry created before.

    One asked under another version of the tool (its input schema) or of its policy is superseded
    and the call asked again (``approval_staleness``); a standing grant that covers the call
    approves it at once (``approvals.grants.grant_use``). Raises ``ApprovalMismatch`` when the
    record found was asked for another call (a pending one is then cancelled: the call it was for
    is gone), and ``TooManyPendingApprovals`` when the user already has
    ``ANVIA_APPROVAL_MAX_PENDING_PER_USER`` requests waiting.
    """
    existing = Approval.objects.for_call(run_id=request.run_id, call_id=request.call_id).first()
    if existing is not None and existing.tool_name == request.tool_name:
        # Checked before the arguments: a changed schema changes them too (a new default field).
        stale = approval_staleness(existing, request)
        if stale is not None:
            approval_supersede(approval=existing, why=stale)
            return _approval_create(request)
    if existing is not None:
        mismatch = approval_call_mismatch(
            asked_tool=existing.tool_name,
            asked_args_hash=existing.args_hash,
            tool_name=request.tool_name,
            args=request.args,
        )
        if mismatch is None:
            return existing, False
        if existing.is_pending:
            approval_cancel(approval_id=existing.pk, reason=f"Superseded: {mismatch}.")
        logger.warning(
            "approval mismatch id=%s run=%s call=%s tool=%s: %s",
            existing.pk,
            request.run_id,
            request.call_id,
            request.tool_name,
            mismatch,
        )
        raise ApprovalMismatch(mismatch)
    return _approval_create(request)


def approval_staleness(approval: Approval, request: ApprovalRequest) -> str | None:
    """Why ``approval`` no longer answers for this call, or ``None``: the tool's input schema or
    the policy that asked changed between the request and now (a deploy while the run waited).
    A call that already ran keeps its approval: it is not asked twice."""
    if approval.executed_at is not None:
        return None
    if approval.tool_fingerprint and request.tool_fingerprint and approval.tool_fingerprint != request.tool_fingerprint:
        return (
            f"the tool {request.tool_name} changed (its name or input schema) since approval #{approval.pk} was asked"
        )
    if (
        approval.policy_fingerprint
        and request.policy_fingerprint
        and approval.policy_fingerprint != request.policy_fingerprint
    ):
        return f"the approval policy of {request.tool_name} changed since approval #{approval.pk} was asked"
    return None


def approval_supersede(*, approval: Approval, why: str) -> bool:
    """Retire ``approval`` so its call is asked again: a pending one is cancelled (reviewers see
    it leave the queue), a decided one stays as decided, marked superseded. ``True`` if this call
    retired it (two workers resuming the same run race here: one wins)."""
    now = timezone.now()
    with transaction.atomic():
        changes: dict[str, Any] = {"superseded": True}
        if approval.is_pending:
            changes.update(status=Approval.Status.CANCELLED, decision_reason=f"Asked again: {why}.", decided_at=now)
        retired = Approval.objects.filter(pk=approval.pk, superseded=False, status=approval.status).update(**changes)
        if not retired:
            return False
        ApprovalEvent.objects.create(approval_id=approval.pk, kind=ApprovalEvent.Kind.SUPERSEDED, data={"why": why})
        if approval.is_pending:
            gone = Approval.objects.select_related("decided_by", "requested_by").get(pk=approval.pk)
            transaction.on_commit(lambda: _announce_cancellation(gone))
    logger.info("approval superseded id=%s run=%s call=%s: %s", approval.pk, approval.run_id, approval.call_id, why)
    return True


def _approval_create(request: ApprovalRequest) -> tuple[Approval, bool]:
    canonical = json.loads(canonical_json(request.args))
    try:
        with transaction.atomic():
            grant = grant_use(request=request, args=canonical)  # given back if the create fails
            if grant is None and request.requested_by_id is not None:
                _check_pending_limit(request)  # a call a grant covers never waits, so never counts
            approval = Approval.objects.create(
                run_id=request.run_id,
                call_id=request.call_id,
                agent_name=request.agent_name,
                conversation_id=request.conversation_id,
                requested_by_id=request.requested_by_id,
                tool_name=request.tool_name,
                args=canonical,
                args_hash=args_hash(canonical),
                input_schema=request.input_schema,
                reason=request.reason,
                required_by_rule=request.required_by_rule,
                reject_message=request.reject_message,
                conversation_excerpt=request.conversation_excerpt,
                preview=request.preview,
                policy_rule=request.policy_rule,
                facts=request.facts,
                quorum=request.quorum,
                reviewer_group=request.reviewer_group,
                reviewer_permission=request.reviewer_permission,
                escalate_to=request.escalate_to,
                escalate_at=None
                if request.escalate_after is None
                else timezone.now() + timedelta(seconds=request.escalate_after),
                tool_fingerprint=request.tool_fingerprint,
                policy_fingerprint=request.policy_fingerprint,
                grant_amount_arg=request.grant_amount_arg,
                grant_scope=list(request.grant_scope),
                expires_at=timezone.now() + timedelta(hours=settings.ANVIA_APPROVAL_TTL_HOURS),
                **(grant_decision_fields(grant) if grant else {}),
            )
            ApprovalEvent.objects.create(
                approval=approval, kind=ApprovalEvent.Kind.REQUESTED, data={"run_id": request.run_id}
            )
            if grant is None:
                transaction.on_commit(lambda: _announce_request(approval))
            else:  # approved at once: nobody to ask, and the waiter reads the row before waiting
                ApprovalEvent.objects.create(
                    approval=approval,
                    kind=ApprovalEvent.Kind.DECIDED,
                    actor_id=None,  # nobody decided this call; the grant (in data) did
                    data={"status": approval.status, "action": approval.action, "grant": grant.pk},
                )
    except IntegrityError:
        # Another worker (a redelivered task) created it between our read and our insert.
        return Approval.objects.for_call(run_id=request.run_id, call_id=request.call_id).get(), False
    logger.info(
        "approval requested id=%s run=%s call=%s tool=%s",
        approval.pk,
        request.run_id,
        request.call_id,
        request.tool_name,
    )
    return approval, True


def _check_pending_limit(request: ApprovalRequest) -> None:
    limit = settings.ANVIA_APPROVAL_MAX_PENDING_PER_USER
    pending = Approval.objects.filter(requested_by_id=request.requested_by_id, status=Approval.Status.PENDING).count()
    if pending >= limit:
        logger.warning(
            "approval refused run=%s call=%s tool=%s user=%s: %s pending, limit %s",
            request.run_id,
            request.call_id,
            request.tool_name,
            request.requested_by_id,
            pending,
            limit,
        )
        raise TooManyPendingApprovals(
            f"This request was not sent to a reviewer: {pending} earlier requests are already waiting for one "
            f"(the limit is {limit}). Wait until those are decided, then ask again."
        )


def _announce_request(approval: Approval) -> None:
    notify_reviewers("approval.created", approval)
    ApprovalEvent.objects.create(approval=approval, kind=ApprovalEvent.Kind.NOTIFIED)
    approval_notify_away_reviewers(approval_id=approval.pk)


def approval_notify_away_reviewers(*, approval_id: int) -> None:
    """Queue the email (and the webhook, when one is set) for reviewers without the queue open,
    after commit: the tasks retry on their own, and nothing they do can fail the request."""
    from approvals.tasks import email_reviewers, post_webhook

    if not settings.ANVIA_REVIEWER_NOTIFICATIONS:
        return
    transaction.on_commit(lambda: email_reviewers.delay(approval_id), robust=True)
    if settings.ANVIA_SLACK_WEBHOOK_URL:
        transaction.on_commit(lambda: post_webhook.delay(approval_id), robust=True)


def _decision_for_wake_up(approval: Approval) -> dict[str, Any] | None:
    """What the wake-up carries: the decision as committed, or nothing while still pending. It
    names the row by id and creation time: ids start again in another database sharing the
    Redis (a test run, a bench, a reset), and a stale wake-up must not pass for this row's."""
    if approval.is_pending:
        return None
    return {"requested_at": approval.created_at.isoformat(), "decision": asdict(Decision.of(approval))}


def _carried_decision(woken: dict[str, Any] | bool, *, approval: Approval) -> Decision | None:
    """The decision a wake-up carried, if it is final and for this very row (read just before
    the wait); else ``None``: the waiter reads the row."""
    if not isinstance(woken, dict) or woken.get("requested_at") != approval.created_at.isoformat():
        return None
    decision = woken.get("decision")
    if not isinstance(decision, dict) or decision.get("approval_id") != approval.pk:
        return None
    if decision.get("status") in (None, Approval.Status.PENDING):
        return None
    try:
        return Decision(**decision)
    except TypeError:  # sent by a process running another version of Decision
        return None


def approval_wait(*, approval_id: int, timeout: float | None) -> Decision | None:
    """Block until the approval is decided (or expires); ``None`` when ``timeout`` runs out first."""
    channel = get_decision_channel()
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        approval = Approval.objects.select_related("decided_by").get(pk=approval_id)
        if not approval.is_pending:
            return Decision.of(approval)
        now = timezone.now()
        if approval.expires_at <= now:
            approval_expire(approval_id=approval_id)
            continue
        until_expiry = (approval.expires_at - now).total_seconds()
        remaining = until_expiry if deadline is None else min(deadline - time.monotonic(), until_expiry)
        if deadline is not None and deadline - time.monotonic() <= 0:
            return None
        woken = channel.wait(approval_id, remaining)
        if decision := _carried_decision(woken, approval=approval):
            return decision  # the committed decision came with the wake-up: no second read


def wait_for_decision(*, request: ApprovalRequest, timeout: float | None) -> Decision | None:
    """Create (or find) the record for this call, notify reviewers, and wait for the decision."""
    approval, _ = approval_request(request=request)
    return approval_wait(approval_id=approval.pk, timeout=timeout)


def reviewer_can_decide(user) -> bool:
    return bool(
        user and user.is_authenticated and user.is_active and user.is_staff and user.has_perm(DECIDE_PERMISSION)
    )


def approval_decide_refusal(*, approval: Approval, user) -> ApprovalError | None:
    """The one rule for who may decide ``approval`` now: the error that refuses ``user``, or
    ``None`` if they may. ``approval_decide`` raises it (the API answers its status); pages show
    its message instead of the buttons."""
    if not reviewer_can_decide(user):
        return NotAReviewer("Deciding needs a staff account with the “Can approve or reject tool calls” permission.")
    if not approval_routed_to(approval, user):
        return NotRoutedToReviewer(routing_refusal_text(approval))
    if approval.requested_by_id is not None and approval.requested_by_id == user.pk:
        return SelfApprovalRefused("You asked for this action, so someone else must decide it.")
    if approval.status == Approval.Status.EXPIRED:
        return ApprovalExpired(f"Approval #{approval.pk} has expired; the agent was told it was not approved.")
    if not approval.is_pending:
        return AlreadyDecided(approval)
    if approval.expires_at <= timezone.now():
        return ApprovalExpired(
            f"Approval #{approval.pk} expired at {approval.expires_at:%Y-%m-%d %H:%M UTC}; it can no longer be decided."
        )
    return None


def _raise(refusal: ApprovalError, approval: Approval) -> NoReturn:
    if isinstance(refusal, ApprovalExpired) and approval.is_pending:
        approval_expire(approval_id=approval.pk)  # the waiter hears "expired" now, not at the next sweep
    raise refusal


def approval_decide(
    *,
    approval_id: int,
    reviewer,
    approved: bool | None = None,
    action: str | None = None,
    reason: str = "",
    edited_args: dict[str, Any] | None = None,
    response: str = "",
    grant: GrantTerms | dict[str, Any] | None = None,
) -> Approval:
    """Record a reviewer's decision: exactly one decision wins; waiters wake after commit.

    ``action``: ``approve`` (optionally with ``edited_args``), ``reject`` (with a ``reason`` the
    model is told), ``respond`` (``response`` is what the model receives instead of the tool's
    result) or ``terminate`` (the whole run stops; its other pending approvals are cancelled).
    ``approved=True/False`` is short for approve / reject. ``grant`` (approving only): standing
    grant terms for the requester's later matching calls (``approvals.grants``).

    Raises what ``approval_decide_refusal`` refuses (``NotAReviewer`` / ``SelfApprovalRefused``
    403, ``AlreadyDecided`` / ``ApprovalExpired`` 409), ``InvalidDecision`` (400, naming the
    field) and ``Approval.DoesNotExist`` (404).
    """
    approval = Approval.objects.select_related("decided_by").get(pk=approval_id)
    refusal = approval_decide_refusal(approval=approval, user=reviewer)
    if refusal is not None:
        _raise(refusal, approval)
    action = _decision_action(approved=approved, action=action, response=response, edited_args=edited_args)
    if edited_args is not None:
        edited_args = _validated_edit(approval, edited_args)
        if args_hash(edited_args) == approval.args_hash:
            edited_args = None
    terms = None if grant is None else grant_terms_checked(approval=approval, action=action, grant=grant)
    if action == Approval.Action.APPROVE and approval.quorum > 1:
        return _approval_vote(approval=approval, reviewer=reviewer, reason=reason, edited_args=edited_args)

    now = timezone.now()
    status = Approval.Status.APPROVED if action == Approval.Action.APPROVE else Approval.Status.REJECTED
    with transaction.atomic():
        won = Approval.objects.filter(pk=approval_id, status=Approval.Status.PENDING, expires_at__gt=now).update(
            status=status,
            action=action,
            decided_by=reviewer,
            decision_reason=reason,
            response=response if action == Approval.Action.RESPOND else "",
            decided_at=now,
            edited_args=edited_args,
        )
        if won:
            ApprovalEvent.objects.create(
                approval_id=approval_id,
                kind=ApprovalEvent.Kind.DECIDED,
                actor=reviewer,
                data={"status": status, "action": action, "reason": reason, "edited_args": edited_args},
            )
            if terms is not None:
                approved_args = edited_args if edited_args is not None else approval.args
                grant_give(approval=approval, reviewer=reviewer, terms=terms, approved_args=approved_args)
            if action == Approval.Action.TERMINATE:
                stopped_by = f"{reviewer.get_username()} stopped the whole run (approval #{approval_id})."
                approvals_cancel_for_run(run_id=approval.run_id, reason=stopped_by)
            decided = Approval.objects.select_related("decided_by", "requested_by").get(pk=approval_id)
            transaction.on_commit(lambda: _announce_decision(decided, "approval.decided"))
    if not won:
        # Someone decided (or the clock ran out) between the read above and the update.
        current = Approval.objects.select_related("decided_by").get(pk=approval_id)
        _raise(approval_decide_refusal(approval=current, user=reviewer) or AlreadyDecided(current), current)
    logger.info(
        "approval decided id=%s run=%s status=%s action=%s by=%s",
        approval_id,
        decided.run_id,
        status,
        action,
        reviewer.get_username(),
    )
    return decided


def _approval_vote(*, approval: Approval, reviewer, reason: str, edited_args: dict | None) -> Approval:
    """Approve a request that needs ``approval.quorum`` distinct reviewers: record this reviewer's
    vote; the vote that completes the quorum approves it (``decided_by`` is that last reviewer,
    every approver is a vote), the others leave it pending and only tell the reviewers, so the run
    keeps waiting. Any rejection meanwhile still rejects it at once (``approval_decide``)."""
    if edited_args is not None:
        # Each approver approves exactly what the others approved: an edit would need them all again.
        why = (
            f"Approval #{approval.pk} needs {approval.quorum} reviewers to approve the same arguments, so they "
            "cannot be edited: approve it as asked, or reject it and say what you would approve."
        )
        raise InvalidEditedArgs(why, {"args": why})
    now = timezone.now()
    refusal: ApprovalError | None = None
    with transaction.atomic():
        # The vote's INSERT comes first: on SQLite it takes the write lock, so concurrent voters
        # queue here (a read first would make them deadlock upgrading their locks). On PostgreSQL
        # the row lock below orders them: the later voter counts the earlier, committed vote.
        try:
            with transaction.atomic():
                ApprovalVote.objects.create(approval_id=approval.pk, reviewer=reviewer)
        except IntegrityError:
            raise AlreadyVoted(
                f"You already approved #{approval.pk}; it needs another reviewer "
                f"({approval.quorum} different reviewers must approve it)."
            ) from None
        current = Approval.objects.select_for_update().get(pk=approval.pk)
        if not current.is_pending or current.expires_at <= now:
            refusal = approval_decide_refusal(approval=current, user=reviewer) or AlreadyDecided(current)
            transaction.set_rollback(True)  # no vote on a request that is no longer open
        else:
            approvers = list(
                ApprovalVote.objects.filter(approval_id=approval.pk)
                .order_by("created_at", "id")
                .values_list("reviewer__username", flat=True)
            )
            if len(approvers) >= current.quorum:
                Approval.objects.filter(pk=approval.pk, status=Approval.Status.PENDING).update(
                    status=Approval.Status.APPROVED,
                    action=Approval.Action.APPROVE,
                    decided_by=reviewer,
                    decision_reason=reason,
                    response="",
                    decided_at=now,
                    edited_args=None,
                )
                kind = ApprovalEvent.Kind.DECIDED
                data = {"status": Approval.Status.APPROVED, "action": Approval.Action.APPROVE, "reason": reason}
            else:
                kind, data = ApprovalEvent.Kind.VOTED, {"reason": reason}
            data.update(approvers=approvers, quorum=current.quorum)
            ApprovalEvent.objects.create(approval_id=approval.pk, kind=kind, actor=reviewer, data=data)
            voted = (
                Approval.objects.select_related("decided_by", "requested_by")
                .prefetch_related("votes__reviewer")
                .get(pk=approval.pk)
            )
            if kind == ApprovalEvent.Kind.DECIDED:
                transaction.on_commit(lambda: _announce_decision(voted, "approval.decided"))
            else:
                # Not the decision channel: the run waits on for the quorum.
                transaction.on_commit(lambda: notify_reviewers("approval.voted", voted))
    if refusal is not None:
        _raise(refusal, current)
    logger.info(
        "approval %s id=%s run=%s approvals=%s/%s by=%s",
        "decided" if kind == ApprovalEvent.Kind.DECIDED else "voted",
        approval.pk,
        approval.run_id,
        len(approvers),
        current.quorum,
        reviewer.get_username(),
    )
    return voted


def _decision_action(*, approved: bool | None, action: str | None, response: str, edited_args: Any) -> str:
    """``anvia.core.decisions.decision_action``, refusing as this app's ``InvalidDecision`` (400)."""
    try:
        return decision_action(approved=approved, action=action, response=response, edited=edited_args is not None)
    except DecisionError as error:
        refused = InvalidEditedArgs if error.field == "args" else InvalidDecision
        raise refused(str(error), {error.field: str(error)}) from None


def _validated_edit(approval: Approval, edited_args: Any) -> dict[str, Any]:
    if not isinstance(edited_args, dict):
        raise InvalidEditedArgs("The edited arguments must be a JSON object.", {"args": "Must be a JSON object."})
    schema = approval.input_schema or {"type": "object"}
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(edited_args), key=lambda e: list(e.path))
    if errors:
        fields = {}
        for error in errors:
            path = [str(part) for part in error.path]
            missing = _missing_field(error)
            name = ".".join([*path, missing] if missing else path)
            top = missing if not path else path[0] if len(path) == 1 else None
            fields.setdefault(f"args.{name}" if name else "args", schema_error_text(schema, error, field_name=top))
        listed = " ".join(message if message.endswith(".") else message + "." for message in fields.values())
        raise InvalidEditedArgs(f"The edited arguments are not valid: {listed}", fields)
    return json.loads(canonical_json(edited_args))


def _missing_field(error: jsonschema.ValidationError) -> str | None:
    if error.validator == "required" and isinstance(error.message, str) and error.message.startswith("'"):
        return error.message.split("'")[1]
    return None


def approval_expire(*, approval_id: int) -> bool:
    """Expire a pending approval whose time is up. ``True`` if this call expired it."""
    now = timezone.now()
    with transaction.atomic():
        expired = Approval.objects.filter(pk=approval_id, status=Approval.Status.PENDING, expires_at__lte=now).update(
            status=Approval.Status.EXPIRED, decision_reason=EXPIRED_REASON, decided_at=now
        )
        if not expired:
            return False
        ApprovalEvent.objects.create(approval_id=approval_id, kind=ApprovalEvent.Kind.EXPIRED)
        approval = Approval.objects.select_related("decided_by", "requested_by").get(pk=approval_id)
        transaction.on_commit(lambda: _announce_decision(approval, "approval.expired"))
    logger.info("approval expired id=%s run=%s", approval_id, approval.run_id)
    return True


def approval_cancel(*, approval_id: int, reason: str) -> bool:
    """Cancel a pending approval nobody will act on (its run failed, or its call is gone).
    ``True`` if this call cancelled it; reviewers are told, and a waiter wakes to a refusal."""
    now = timezone.now()
    with transaction.atomic():
        cancelled = Approval.objects.filter(pk=approval_id, status=Approval.Status.PENDING).update(
            status=Approval.Status.CANCELLED, decision_reason=reason, decided_at=now
        )
        if not cancelled:
            return False
        ApprovalEvent.objects.create(
            approval_id=approval_id, kind=ApprovalEvent.Kind.CANCELLED, data={"reason": reason}
        )
        approval = Approval.objects.select_related("decided_by", "requested_by").get(pk=approval_id)
        transaction.on_commit(lambda: _announce_cancellation(approval))
    logger.info("approval cancelled id=%s run=%s reason=%s", approval_id, approval.run_id, reason)
    return True


def approvals_cancel_for_run(*, run_id: str, reason: str) -> int:
    """Cancel every pending approval of a run (it failed). Returns how many."""
    pending = Approval.objects.filter(run_id=run_id, status=Approval.Status.PENDING).values_list("pk", flat=True)
    return sum(approval_cancel(approval_id=pk, reason=reason) for pk in list(pending))


def _announce_cancellation(approval: Approval) -> None:
    get_decision_channel().publish(approval.pk)
    # Reviewer pages treat any non-pending status in approval.decided as "gone from the queue".
    notify_reviewers("approval.decided", approval)


def approvals_expire_overdue(*, limit: int = 1000) -> int:
    """Expire every overdue pending approval (the beat task). Returns how many."""
    overdue = Approval.objects.filter(status=Approval.Status.PENDING, expires_at__lte=timezone.now()).values_list(
        "pk", flat=True
    )[:limit]
    return sum(approval_expire(approval_id=pk) for pk in list(overdue))


def approval_record_outcome(*, approval_id: int, outcome: dict[str, Any]) -> None:
    """Log what the run did with the decision (the tool ran, or was skipped); when it ran, the
    receipt that links the decision to what happened (see ``approval_receipt``)."""
    with transaction.atomic():
        approval = Approval.objects.select_related("decided_by", "grant__granted_by").get(pk=approval_id)
        receipt = approval_receipt(approval, outcome) if outcome.get("outcome") == "ran" else None
        Approval.objects.filter(pk=approval_id).update(outcome=outcome, executed_at=timezone.now(), receipt=receipt)
        ApprovalEvent.objects.create(approval_id=approval_id, kind=ApprovalEvent.Kind.EXECUTED, data=outcome)


def approval_receipt(approval: Approval, outcome: dict[str, Any]) -> dict[str, Any]:
    """What ran on this approval: who approved it (every approver of a quorum, or the grant and
    its grantor) -> the hash of the args it ran with -> the idempotency key the tool was handed
    -> the result's reference (the first ``*_id`` the result adds, e.g. ``RF-12``)."""
    made = result_ids(outcome.get("result"), approval.approved_args)
    return {
        "approval_ids": [approval.pk],
        "approved_by": approval.approvers,
        "grant_id": approval.grant_id,
        "grant_from": approval.grant.granted_by.get_username() if approval.grant_id else None,
        "args_hash": args_hash(approval.approved_args),
        "idempotency_key": f"{approval.run_id}:{approval.call_id}",
        "result": made[0][1] if made else None,
    }


def approval_record_call_outcome(*, run_id: str, call_id: str, outcome: dict[str, Any]) -> bool:
    """``approval_record_outcome`` for the approval of a run's call; ``False`` if it had none."""
    approval_id = Approval.objects.for_call(run_id=run_id, call_id=call_id).values_list("pk", flat=True).first()
    if approval_id is None:
        return False
    approval_record_outcome(approval_id=approval_id, outcome=outcome)
    return True


def _announce_decision(approval: Approval, kind: str) -> None:
    get_decision_channel().publish(approval.pk, _decision_for_wake_up(approval))
    notify_reviewers(kind, approval)
    approval_decided.send(sender=Approval, approval=approval)


@dataclass(frozen=True)
class BulkResult:
    """One row of a bulk decision: the decided approval, or the error that stopped it."""

    approval_id: int
    decided: Approval | None = None
    error: ApprovalError | None = None


def approvals_decide_each(*, approval_ids: list[int], reviewer, approved: bool, reason: str) -> list[BulkResult]:
    """Approve or reject each approval through ``approval_decide`` on its own: one refusal
    (already decided, expired, your own request, gone) never stops the others."""
    results = []
    for approval_id in sorted(set(approval_ids)):
        try:
            decided = approval_decide(approval_id=approval_id, reviewer=reviewer, approved=approved, reason=reason)
        except ApprovalError as error:
            results.append(BulkResult(approval_id, error=error))
        except Approval.DoesNotExist:
            results.append(BulkResult(approval_id, error=ApprovalError(f"Approval #{approval_id} does not exist.")))
        else:
            results.append(BulkResult(approval_id, decided=decided))
    return results
