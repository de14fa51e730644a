"""Approval policies in the app: the split refund asks on the call that crosses the line, every
outcome is recorded, an approval asked under a changed tool or policy is asked again, the receipt
links the decision to what ran, and a candidate rule replays on recorded history."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from pydantic import BaseModel

from agents.models import AgentRun
from agents.services import run_execute
from agents.support import support_agent
from anvia import Approval as ToolApproval
from anvia import allow, ask, create_tool
from approvals.models import Approval, ApprovalEvent, PolicyCheck
from approvals.policy_checks import policy_replay
from approvals.services import approval_decide
from shop.models import Refund

pytestmark = pytest.mark.django_db(transaction=True)


def say(api, text: str) -> AgentRun:
    """Post ``text`` to a new conversation through the API, as the customer's browser does, and
    run what it queued, as the worker would."""
    conversation = api.post("/api/conversations/", {}, format="json").json()["id"]
    response = api.post(f"/api/conversations/{conversation}/messages/", {"content": text}, format="json")
    assert response.status_code == 202, response.content
    run = AgentRun.objects.get(pk=response.json()["run_id"])
    return run_execute(run_id=run.pk)


def test_a_split_refund_asks_a_reviewer_on_the_call_that_crosses_the_line(alice_api, reviewer_api, suspending):
    first = say(alice_api, "refund order A-1001, $100")
    assert first.status == "succeeded"
    assert not Approval.objects.exists()  # $100 of $249: within the $100 in 30 days, no reviewer asked
    assert Refund.objects.get().amount == Decimal("100.00")

    second = say(alice_api, "refund order A-1001, $100")
    assert second.status == "suspended"
    asked = Approval.objects.get()
    assert asked.reason == (
        "Review refund of $100.00 for A-1001: $100.00 of $249.00 already refunded in 1 call in the last 30 days."
    )
    assert asked.policy_rule == "over $100 in 30 days"
    assert asked.facts["refunded_in_window"] == "100.00"
    decided = reviewer_api.post(f"/api/approvals/{asked.pk}/decision/", {"approved": True}, format="json")
    assert decided.status_code == 200
    assert run_execute(run_id=second.pk).status == "succeeded"

    third = say(alice_api, "refund order A-1001, $49")
    assert third.status == "suspended"  # $49 would refund the whole order: asked, not slipped through
    assert Approval.objects.filter(status="pending").get().reason == (
        "Review refund of $49.00 for A-1001: $200.00 of $249.00 already refunded in 2 calls in the last 30 days."
    )
    assert Refund.objects.count() == 2

    checks = list(PolicyCheck.objects.order_by("pk").values_list("outcome", "rule"))
    assert checks == [
        ("allow", "small refunds"),
        ("ask", "over $100 in 30 days"),
        ("ask", "over $100 in 30 days"),
    ]
    allowed = PolicyCheck.objects.order_by("pk").first()
    assert allowed.reason == "$100.00 refunded on A-1001 in 30 days with this one, within $100"
    assert allowed.requested_by.username == "alice"


def test_a_refund_larger_than_the_order_is_denied_without_asking_anyone(alice_api, suspending):
    run = say(alice_api, "refund order A-1003, $60")  # A-1003 totals $45

    assert run.status == "succeeded"
    assert not Approval.objects.exists()
    assert not Refund.objects.exists()
    check = PolicyCheck.objects.get()
    assert (check.outcome, check.rule) == ("deny", "more than is left")
    assert check.reason == "Only $45.00 of order A-1003's $45.00 is left to refund: no larger refund can be made."
    result = next(c for c in AgentRun.objects.get(pk=run.pk).state["tool_calls"])
    assert result["outcome"] == "skipped"
    assert result["message"] == check.reason
    events = alice_api.get(f"/api/runs/{run.pk}/").json()["events"]
    assert f"Not allowed: {check.reason}" in [event["text"] for event in events]


def test_the_receipt_links_the_approval_to_the_key_and_the_refund(alice, reviewer, suspending):
    from tests.support.chats import ask as post

    run = post(alice, "refund order A-1001, $150")
    run_execute(run_id=run.pk)
    approval = Approval.objects.get()
    approval_decide(approval_id=approval.pk, reviewer=reviewer, approved=True)
    run_execute(run_id=run.pk)

    approval.refresh_from_db()
    refund = Refund.objects.get()
    assert approval.receipt == {
        "approval_ids": [approval.pk],
        "approved_by": [reviewer.username],
        "grant_id": None,
        "grant_from": None,
        "args_hash": approval.args_hash,
        "idempotency_key": refund.idempotency_key,
        "result": f"RF-{refund.pk}",
    }


class WiderRefund(BaseModel):
    order_id: str
    amount: float
    note: str = ""


def test_a_tool_whose_schema_changed_while_the_run_waited_is_asked_again(
    alice, reviewer, suspending, monkeypatch, client
):
    from tests.support.chats import ask as post

    run = post(alice, "refund order A-1001, $150")
    run_execute(run_id=run.pk)
    first = Approval.objects.get()
    # A deploy while the run waits: the tool now takes a note (its input schema changed).
    original = support_agent.tools["refund_order"]
    changed = create_tool(
        name="refund_order",
        description=original.description,
        input=WiderRefund,
        approval=original.approval,
        execute=original.execute,
    )
    monkeypatch.setitem(support_agent.tools, "refund_order", changed)
    approval_decide(approval_id=first.pk, reviewer=reviewer, approved=True)

    resumed = run_execute(run_id=run.pk)
    assert resumed.status == "suspended"  # asked again, not run
    assert not Refund.objects.exists()
    first.refresh_from_db()
    again = Approval.objects.get(superseded=False)
    assert first.superseded
    assert first.status == "approved"
    assert again.pk != first.pk
    assert again.status == "pending"
    assert again.call_id == first.call_id
    why = ApprovalEvent.objects.get(approval=first, kind="superseded").data["why"]
    assert why == f"the tool refund_order changed (its name or input schema) since approval #{first.pk} was asked"

    approval_decide(approval_id=again.pk, reviewer=reviewer, approved=True)
    assert run_execute(run_id=run.pk).status == "succeeded"
    assert Refund.objects.count() == 1


def test_a_policy_that_changed_while_a_request_was_pending_cancels_it_and_asks_again(alice, suspending, monkeypatch):
    from tests.support.chats import ask as post

    run = post(alice, "refund order A-1001, $150")
    run_execute(run_id=run.pk)
    first = Approval.objects.get()
    original = support_agent.tools["refund_order"]
    stricter = create_tool(
        name="refund_order",
        description=original.description,
        input=original.input,
        approval=ToolApproval(policy=[ask(lambda call: call.args.amount > 10, quorum=2), allow()]),
        execute=original.execute,
    )
    monkeypatch.setitem(support_agent.tools, "refund_order", stricter)

    assert run_execute(run_id=run.pk).status == "suspended"

    first.refresh_from_db()
    assert (first.status, first.superseded) == ("cancelled", True)
    assert first.decision_reason.startswith("Asked again: the approval policy of refund_order changed")
    again = Approval.objects.get(superseded=False)
    assert (again.status, again.quorum) == ("pending", 2)


# Replay -----------------------------------------------------------------------------------------


def ask_over_300(call) -> bool:
    """A candidate: ask only for refunds over $300."""
    return call.args.amount > 300


CANDIDATE_POLICY = [
    ask(lambda call: Decimal(call.facts["refunded_in_window"]) + Decimal(str(call.args.amount)) > 40),
    allow(),
]


def recorded(*, amount: float, outcome: str, refunded: str = "0.00", user=None, n: int) -> PolicyCheck:
    return PolicyCheck.objects.create(
        run_id=f"run-{n}",
        call_id=f"call-{n}",
        tool_name="refund_order",
        args={"order_id": "A-1001", "amount": amount},
        args_hash=f"h{n}",
        outcome=outcome,
        rule="r",
        facts={"refunded_in_window": refunded},
        requested_by=user,
    )


def asked_and_decided(*, n: int, amount: float, reviewer, approved: bool, reason: str, user) -> None:
    from approvals.services import ApprovalRequest, approval_request

    recorded(amount=amount, outcome="ask", n=n, user=user)
    approval, _ = approval_request(
        request=ApprovalRequest(
            run_id=f"run-{n}",
            call_id=f"call-{n}",
            tool_name="refund_order",
            args={"order_id": "A-1001", "amount": amount},
            reason="r",
            requested_by_id=user.pk,
        )
    )
    approval_decide(approval_id=approval.pk, reviewer=reviewer, approved=approved, reason=reason)


def test_replay_reports_what_a_candidate_rule_would_change_and_changes_nothing(alice, reviewer, capsys):
    recorded(amount=20, outcome="allow", n=1, user=alice)
    recorded(amount=30, outcome="allow", refunded="20.00", n=2, user=alice)
    asked_and_decided(n=3, amount=150, reviewer=reviewer, approved=False, reason="Not our fault.", user=alice)
    asked_and_decided(n=4, amount=120, reviewer=reviewer, approved=True, reason="", user=alice)
    asked_and_decided(n=5, amount=400, reviewer=reviewer, approved=False, reason="Too much.", user=alice)
    recorded(amount=250, outcome="deny", n=6, user=alice)  # refused by the policy then
    before = (PolicyCheck.objects.count(), list(Approval.objects.values_list("status", flat=True)))

    call_command("approvals_replay", "--tool", "refund_order", "--rule", f"{__name__}.ask_over_300")
    out = capsys.readouterr().out

    assert "Replayed 6 recorded calls of refund_order" in out
    assert "unchanged: 3" in out  # the two small ones still run; the $400 one is still asked
    assert "would skip review: 2" in out
    assert "of which a person had rejected: 1 (1 would now run unasked)" in out
    assert '"amount": 150' in out
    assert 'rejected by rita: "Not our fault." -> now allow' in out
    assert "Too much." not in out  # still asked under the candidate
    assert "would now ask: 0" in out
    assert "would now deny: 0" in out
    assert "would now run unasked: 1 (the policy refused them then)" in out
    assert '"amount": 250' in out
    # Every recorded call is counted once, in exactly one group.
    report = policy_replay(tool_name="refund_order", candidate=ask_over_300)
    groups = [
        report.unchanged,
        report.would_skip_review,
        report.would_now_ask,
        report.would_now_deny,
        report.would_now_run,
    ]
    assert sorted(c.check.pk for group in groups for c in group) == sorted(c.check.pk for c in report.calls)
    assert (PolicyCheck.objects.count(), list(Approval.objects.values_list("status", flat=True))) == before

    call_command("approvals_replay", "--tool", "refund_order", "--rule", f"{__name__}.CANDIDATE_POLICY")
    stricter = capsys.readouterr().out
    assert "would now ask: 2" in stricter  # $30 after $20 crosses $40; the refused $250 would be asked
    assert '"amount": 30' in stricter


def test_replay_says_clearly_when_it_cannot_run(db):
    with pytest.raises(CommandError, match="Cannot import the rule"):
        call_command("approvals_replay", "--tool", "refund_order", "--rule", "nowhere.rule")
    with pytest.raises(CommandError, match="No recorded calls of 'refund_orders'"):
        call_command("approvals_replay", "--tool", "refund_orders", "--rule", f"{__name__}.ask_over_300")
