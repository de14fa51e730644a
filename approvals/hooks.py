"""The approval hook: any tool's approval metadata, applied through the approval runtime."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from typing import Any

from django.conf import settings

from anvia import Hook, ToolCall, create_hook
from approvals.errors import ApprovalMismatch, TooManyPendingApprovals
from approvals.models import Approval
from approvals.policy_checks import policy_check_of_call
from approvals.services import (
    ApprovalRequest,
    Decision,
    approval_call_mismatch,
    approval_request,
    approval_wait,
    wait_for_decision,
)

EXCERPT_MESSAGES = 10


def approval_hook(
    *,
    user=None,
    conversation_id: str | int = "",
    agent_name: str = "",
    block_seconds: float | None = None,
) -> Hook:
    """A request hook that turns each protected call into an ``Approval`` and waits for it.

    All protected calls of a model step are put to reviewers at once and share one wait.
    Approved: the tool runs, with the reviewer's edited args if any. Rejected or expired: the
    model gets the tool's ``reject_message`` and the reviewer's reason. Still pending after
    ``block_seconds`` (``None``: ``ANVIA_APPROVAL_BLOCK_SECONDS``): the run suspends, to be
    resumed when the decision lands. Not run, and the model told why: a call whose id names an
    approval asked for another call (``MISMATCH_MESSAGE``), and a call of a user who already has
    ``ANVIA_APPROVAL_MAX_PENDING_PER_USER`` requests waiting.
    """
    budget = settings.ANVIA_APPROVAL_BLOCK_SECONDS if block_seconds is None else block_seconds
    identity = {"user": user, "conversation_id": conversation_id, "agent_name": agent_name}
    # One budget for a step's calls: they wait together, not one budget after another.
    step: dict[str, Any] = {"deadline": None, "approvals": {}}

    def on_approvals_requested(calls: Sequence[ToolCall]) -> None:
        """Every protected call of the step goes before reviewers now, together."""
        step["deadline"] = time.monotonic() + budget
        for call in calls:
            # A refused request is asked again below, where the model is told why.
            with contextlib.suppress(ApprovalMismatch, TooManyPendingApprovals):
                approval, _ = approval_request(request=approval_request_for(call, **identity))
                step["approvals"][call.call_id] = approval.pk
                if approval.grant_id is not None and approval.status == Approval.Status.APPROVED:
                    call.approved_without_review = approval.decision_reason

    def on_tool_call(call: ToolCall):
        if not call.requires_approval:
            return None
        deadline = step["deadline"]
        timeout = budget if deadline is None else max(0.0, deadline - time.monotonic())
        approval_id = step["approvals"].pop(call.call_id, None)
        try:
            if approval_id is not None:  # asked above: wait on it (no second request, preview and lookup)
                decision = approval_wait(approval_id=approval_id, timeout=timeout)
            else:
                decision = wait_for_decision(request=approval_request_for(call, **identity), timeout=timeout)
        except ApprovalMismatch as mismatch:
            return call.tool.skip(mismatch_message(str(mismatch)))
        except TooManyPendingApprovals as refused:
            return call.tool.skip(str(refused))
        if decision is None:
            return call.tool.suspend(f"waiting for approval #{_approval_id(call)}")
        return verdict_for(call, decision)

    def on_policy(call: ToolCall) -> None:
        """The audit trail: why each call of a protected tool runs, is refused or is asked."""
        policy_check_of_call(
            call, requested_by_id=getattr(user, "pk", None), agent_name=agent_name, conversation_id=conversation_id
        )

    return create_hook(
        on_tool_call=on_tool_call,
        on_approvals_requested=on_approvals_requested,
        on_policy=on_policy,
        name="approval hook",
    )


def approval_request_for(call: ToolCall, *, user=None, conversation_id: str | int = "", agent_name: str = ""):
    """The ``ApprovalRequest`` for a tool call, with what the reviewer needs to judge it."""
    rule = call.approval
    policy = call.policy
    return ApprovalRequest(
        run_id=call.run_id,
        call_id=call.call_id,
        tool_name=call.tool_name,
        args=call.args_json,
        reason=call.approval_reason or f"Approve {call.tool_name}?",
        reject_message=call.approval.reject_message if call.approval else "The tool call was not approved.",
        agent_name=agent_name,
        conversation_id=str(conversation_id or ""),
        requested_by_id=getattr(user, "pk", None),
        required_by_rule=True if call.approval else None,
        input_schema=call.definition.input.model_json_schema(),
        conversation_excerpt=[
            {"role": m.role, "content": m.content} for m in call.messages[-EXCERPT_MESSAGES:] if m.content
        ],
        preview=call.preview(),
        policy_rule=policy.rule if policy else "",
        facts=dict(policy.facts) if policy else {},
        quorum=policy.quorum if policy else 1,
        reviewer_group=rule.reviewer_group if rule else "",
        reviewer_permission=rule.reviewer_permission if rule else "",
        escalate_after=rule.escalate_after if rule else None,
        escalate_to=rule.escalate_to if rule else "",
        tool_fingerprint=call.definition.fingerprint(),
        policy_fingerprint=policy.fingerprint if policy else "",
        grant_amount_arg=rule.grant_amount if rule else "",
        grant_scope=rule.grant_scope if rule else (),
    )


def mismatch_message(why: str) -> str:
    """What the model is told when a decision on record belongs to another call: the call is
    skipped, never run on a decision made for something else; calling again asks anew."""
    return (
        f"This call was not run: {why}, so no reviewer has decided this one. Call the tool again if it is still needed."
    )


def verdict_for(call: ToolCall, decision: Decision):
    """``run()`` with exactly the approved args, or ``skip()`` with the reasons; never acts on a
    decision made for another call (tool name and args hash are checked first)."""
    mismatch = approval_call_mismatch(
        asked_tool=decision.tool_name, asked_args_hash=decision.args_hash, tool_name=call.tool_name, args=call.args_json
    )
    if mismatch is not None:
        return call.tool.skip(mismatch_message(mismatch))
    if decision.action == Approval.Action.RESPOND:
        return call.tool.respond(decision.response)
    if decision.action == Approval.Action.TERMINATE:
        return call.tool.terminate(decision.reason or f"{decision.decided_by or 'A reviewer'} stopped this run.")
    if decision.approved:
        if not decision.edited:
            return call.tool.run()
        asked = json.dumps(call.args_json, sort_keys=True)
        shown = json.dumps(decision.args, sort_keys=True)
        return call.tool.run(
            args=decision.args,
            note=f"A reviewer changed the arguments from {asked} to {shown}; the tool ran with the reviewer's.",
        )
    reject_message = call.approval.reject_message if call.approval else "The tool call was not approved."
    return call.tool.skip(rejection_message(reject_message, decision))


def rejection_message(reject_message: str, decision: Decision) -> str:
    if decision.status == Approval.Status.EXPIRED:
        return f"{reject_message} (The approval request expired before anyone decided.)"
    if decision.status == Approval.Status.CANCELLED:
        return f"{reject_message} (The approval request was cancelled: {decision.reason})"
    if decision.reason:
        return f"{reject_message} Reviewer's reason: {decision.reason}"
    return reject_message


def _approval_id(call: ToolCall) -> Any:
    return Approval.objects.for_call(run_id=call.run_id, call_id=call.call_id).values_list("pk", flat=True).first()
