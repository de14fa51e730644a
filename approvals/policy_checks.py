"""The audit trail of tool policies: what each protected call's policy decided, and replaying a
candidate rule over that history (``manage.py approvals_replay``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from anvia.core.policies import ALLOW, ASK, DENY, PolicyRule
from anvia.core.tools import ToolCall
from approvals.models import Approval, PolicyCheck
from approvals.services import args_hash


def policy_check_record(
    *,
    run_id: str,
    call_id: str,
    tool_name: str,
    args: dict[str, Any],
    args_hash: str,
    outcome: str,
    rule: str,
    reason: str,
    facts: dict[str, Any],
    quorum: int = 1,
    tool_fingerprint: str = "",
    policy_fingerprint: str = "",
    requested_by_id: int | None = None,
    agent_name: str = "",
    conversation_id: str = "",
) -> PolicyCheck:
    """Record what the policy decided for this call. A resumed run decides its call again: the
    same outcome under the same policy is recorded once; a different one is added (the trail
    shows the policy, or the facts it read, changed in between)."""
    last = PolicyCheck.objects.filter(run_id=run_id, call_id=call_id).order_by("-pk").first()
    if last is not None and (last.outcome, last.rule, last.policy_fingerprint, last.tool_fingerprint) == (
        outcome,
        rule,
        policy_fingerprint,
        tool_fingerprint,
    ):
        return last
    return PolicyCheck.objects.create(
        run_id=run_id,
        call_id=call_id,
        tool_name=tool_name,
        args=args,
        args_hash=args_hash,
        outcome=outcome,
        rule=rule[:200],
        reason=reason,
        facts=facts,
        quorum=quorum,
        tool_fingerprint=tool_fingerprint,
        policy_fingerprint=policy_fingerprint,
        requested_by_id=requested_by_id,
        agent_name=agent_name,
        conversation_id=conversation_id,
    )


def policy_check_of_call(call: ToolCall, *, requested_by_id=None, agent_name="", conversation_id="") -> PolicyCheck:
    """``policy_check_record`` for a call whose policy has decided (``call.policy``)."""
    policy = call.policy
    arguments = call.args_json
    return policy_check_record(
        run_id=call.run_id,
        call_id=call.call_id,
        tool_name=call.tool_name,
        args=arguments,
        args_hash=args_hash(arguments),
        outcome=policy.outcome,
        rule=policy.rule,
        reason=policy.message if policy.outcome == DENY else policy.reason,
        facts=dict(policy.facts),
        quorum=policy.quorum,
        tool_fingerprint=call.definition.fingerprint(),
        policy_fingerprint=policy.fingerprint,
        requested_by_id=requested_by_id,
        agent_name=agent_name,
        conversation_id=str(conversation_id or ""),
    )


# Replay ----------------------------------------------------------------------------------------


@dataclass
class ReplayedCall:
    check: PolicyCheck
    approval: Approval | None
    now: str  # what the candidate rule decides: allow, deny or ask
    error: str = ""

    @property
    def human_decision(self) -> str:
        return self.approval.status if self.approval is not None else ""


@dataclass
class ReplayReport:
    tool_name: str
    calls: list[ReplayedCall] = field(default_factory=list)

    def _where(self, test: Callable[[ReplayedCall], bool]) -> list[ReplayedCall]:
        return [c for c in self.calls if test(c)]

    # Every call is in exactly one of these five, by what its policy decided then and what the
    # candidate decides now.

    @property
    def unchanged(self) -> list[ReplayedCall]:
        return self._where(lambda c: c.check.outcome == c.now)

    @property
    def would_skip_review(self) -> list[ReplayedCall]:
        """Asked a person then; the candidate would let them run, or refuse them, unasked."""
        return self._where(lambda c: c.check.outcome == ASK and c.now != ASK)

    @property
    def rejected_but_would_skip_review(self) -> list[ReplayedCall]:
        """Of those, the ones a person had rejected: with ``now == "allow"``, the cost of the change."""
        return [c for c in self.would_skip_review if c.human_decision == Approval.Status.REJECTED]

    @property
    def would_now_ask(self) -> list[ReplayedCall]:
        """Ran, or were refused, without review then; the candidate would ask a person."""
        return self._where(lambda c: c.check.outcome != ASK and c.now == ASK)

    @property
    def would_now_deny(self) -> list[ReplayedCall]:
        """Ran without review then; the candidate would refuse them."""
        return self._where(lambda c: c.check.outcome == ALLOW and c.now == DENY)

    @property
    def would_now_run(self) -> list[ReplayedCall]:
        """Refused by the policy then; the candidate would let them run without review."""
        return self._where(lambda c: c.check.outcome == DENY and c.now == ALLOW)

    @property
    def failed(self) -> list[ReplayedCall]:
        return self._where(lambda c: bool(c.error))


def replayed_call(check: PolicyCheck) -> SimpleNamespace:
    """A recorded call as a rule sees it: ``call.args.<name>`` and ``call.facts`` as recorded
    (JSON values: a number stays a number, money recorded as text stays text)."""
    return SimpleNamespace(
        tool_name=check.tool_name,
        call_id=check.call_id,
        run_id=check.run_id,
        args=SimpleNamespace(**check.args),
        args_json=check.args,
        facts=check.facts,
        context={"user_id": check.requested_by_id},
        messages=(),
    )


def candidate_outcome(candidate: Any, call: SimpleNamespace) -> str:
    """What ``candidate`` decides for ``call``: a policy (a list of rules, first match wins, no
    match asks), one rule, or a function returning ``True`` (ask) / ``False`` (allow) or an
    outcome ("allow", "deny", "ask")."""
    if isinstance(candidate, PolicyRule):
        candidate = [candidate]
    if isinstance(candidate, list | tuple):
        for rule in candidate:
            if rule.when is None or rule.when(call):
                return rule.outcome
        return ASK
    decided = candidate(call)
    if isinstance(decided, str):
        if decided not in (ALLOW, DENY, ASK):
            raise ValueError(f"the rule returned {decided!r}; return True/False or one of allow, deny, ask")
        return decided
    return ASK if decided else ALLOW


def policy_replay(*, tool_name: str, candidate: Any, checks: Iterable[PolicyCheck] | None = None) -> ReplayReport:
    """Try ``candidate`` on every recorded call of ``tool_name`` (the latest check of each call)
    and say what would change. Reads only; nothing is written."""
    if checks is None:
        checks = PolicyCheck.objects.filter(tool_name=tool_name).order_by("pk")
    latest: dict[tuple[str, str], PolicyCheck] = {}
    for check in checks:
        latest[(check.run_id, check.call_id)] = check
    approvals = {
        (a.run_id, a.call_id): a
        for a in Approval.objects.filter(tool_name=tool_name, superseded=False).select_related("decided_by")
    }
    report = ReplayReport(tool_name=tool_name)
    for key, check in latest.items():
        try:
            now = candidate_outcome(candidate, replayed_call(check))
            error = ""
        except Exception as failure:
            now, error = ASK, f"{type(failure).__name__}: {failure}"  # fail closed, as a live rule would
        report.calls.append(ReplayedCall(check=check, approval=approvals.get(key), now=now, error=error))
    return report


def describe_call(call: ReplayedCall) -> str:
    approval = call.approval
    args = json.dumps(call.check.args, sort_keys=True)
    where = f"run {call.check.run_id[:8]} call {call.check.call_id[:24]}"
    if approval is None:
        return (
            f"{call.check.tool_name}({args}) [{where}], then {call.check.outcome} by {call.check.rule or 'the policy'}"
        )
    by = approval.decided_by.get_username() if approval.decided_by_id else "nobody"
    why = f': "{approval.decision_reason}"' if approval.decision_reason else ""
    return f"#{approval.pk} {call.check.tool_name}({args}) [{where}], {approval.status} by {by}{why}"
