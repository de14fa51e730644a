"""``ApprovalsStore``: Studio's approvals as the approvals app's records, decided as ``studio``."""

from __future__ import annotations

import pytest

from agents.services import run_resume_after_decision
from anvia import Agent
from anvia.studio import ApprovalStore, DecisionRefused
from anvia.studio.runs import StudioError
from anvia.testing import ScriptedModel, call
from approvals.models import Approval, ApprovalEvent
from approvals.selectors import approvals_pending
from approvals.services import approval_decide
from approvals.studio_store import ApprovalsStore, studio_reviewer_ensure
from tests.factories import ApprovalFactory, ReviewerFactory, UserFactory
from tests.studio.conftest import finished, pending_approval, previewed_refund_agent, refund_agent, until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def alice():
    return UserFactory(username="alice")


def refund_chat(studio_runs, alice, executed: list):
    model = ScriptedModel([call("refund_order", order_id="A-1001", amount=150), "Refunded."])
    runs = studio_runs(refund_agent(model, executed), on=ApprovalsStore())
    chat = runs.chat_start(agent_name="support", user_id=alice.pk, message="refund A-1001 $150")
    return runs, chat, pending_approval(runs)


def test_a_studio_decision_is_an_approval_decided_by_studio(studio_runs, alice):
    executed = []
    runs, chat, pending = refund_chat(studio_runs, alice, executed)
    assert isinstance(runs.store, ApprovalStore)

    row = Approval.objects.get(pk=pending.id)
    assert (row.status, row.requested_by, row.reason) == ("pending", alice, "Review refund of $150 for A-1001.")
    assert row.input_schema["required"] == ["order_id", "amount"]
    assert list(approvals_pending()) == [row]  # the reviewer queue and the admin read the same rows

    runs.decide(approval_id=pending.id, approved=True, reason="Looks right.")
    assert finished(runs, chat.id)["status"] == "succeeded"
    assert len(executed) == 1
    row.refresh_from_db()
    assert (row.status, row.decided_by.username, row.decision_reason) == ("approved", "studio", "Looks right.")
    assert row.outcome == {
        "outcome": "ran",
        "result": {"order_id": "A-1001", "amount": 150.0, "refund_id": "R-1"},
        "message": None,
    }
    kinds = list(ApprovalEvent.objects.filter(approval=row).values_list("kind", flat=True))
    assert kinds[0] == "requested"
    assert {"decided", "executed"} <= set(kinds)
    # A Studio run is no run of the app: the app's resume-on-decision leaves it alone.
    assert run_resume_after_decision(approval=row) is False


def test_a_decision_in_the_admin_wakes_the_waiting_studio_run(studio_runs, alice):
    executed = []
    runs, chat, pending = refund_chat(studio_runs, alice, executed)
    approval_decide(approval_id=pending.id, reviewer=ReviewerFactory(username="rita"), approved=False, reason="No.")
    detail = finished(runs, chat.id)
    assert executed == []
    decided = next(e for e in detail["runs"][0]["events"] if e["type"] == "approval_decided")
    assert decided["approval"]["decided_by"] == "rita"
    skipped = next(e for e in detail["runs"][0]["events"] if e["type"] == "tool_result")
    assert skipped["data"]["content"] == "Refund was not approved. Reviewer's reason: No."


def test_the_requester_never_decides_and_the_studio_reviewer_is_never_acted_as(studio_runs, alice):
    store = ApprovalsStore()
    staff = UserFactory(username="aaron", is_staff=True)
    reviewer = studio_reviewer_ensure()
    assert [(u.id, u.label, u.note) for u in store.users()] == [(alice.pk, "alice", ""), (staff.pk, "aaron", "staff")]
    assert not reviewer.has_usable_password()

    runs = studio_runs(Agent(name="support", instructions="Hi.", model=ScriptedModel(["Hi."])), on=store)
    with pytest.raises(StudioError, match="Choose a user to act as"):
        runs.chat_start(agent_name="support", user_id=reviewer.pk, message="hi")

    # Were the studio user ever the requester, its own decision would be refused.
    executed = []
    runs, _, pending = refund_chat(studio_runs, alice, executed)
    Approval.objects.filter(pk=pending.id).update(requested_by=reviewer)
    with pytest.raises(DecisionRefused, match="someone else must decide it"):
        runs.store.decide(pending.id, approved=True)
    assert Approval.objects.get(pk=pending.id).status == "pending"


def test_the_store_answers_only_for_its_own_approvals_and_cancels_on_stop(studio_runs, alice):
    foreign = ApprovalFactory()
    executed = []
    runs, chat, pending = refund_chat(studio_runs, alice, executed)
    assert [r.id for r in runs.store.pending()] == [pending.id]
    with pytest.raises(StudioError, match=f"There is no Studio approval #{foreign.pk}.") as refused:
        runs.decide(approval_id=foreign.pk, approved=True)
    assert refused.value.status == 404

    assert runs.shutdown(5)
    row = Approval.objects.get(pk=pending.id)
    assert (row.status, row.decision_reason) == ("cancelled", "Studio stopped before anyone decided.")
    assert runs.chat_detail(chat.id)["status"] == "stopped"
    assert executed == []


def test_respond_is_recorded_as_the_apps_respond_with_the_preview_the_reviewer_saw(studio_runs, alice):
    executed = []
    model = ScriptedModel([call("refund_order", order_id="A-1001", amount=150), "Handled."])
    runs = studio_runs(previewed_refund_agent(model, executed), on=ApprovalsStore())
    chat = runs.chat_start(agent_name="support", user_id=alice.pk, message="refund A-1001 $150")
    pending = pending_approval(runs)
    row = Approval.objects.get(pk=pending.id)
    assert row.preview == {
        "warnings": ["Only $80.00 is left to refund on A-1001."],
        "facts": [
            {"name": "order", "value": "A-1001"},
            {"name": "left_to_refund", "value": "$80.00"},
            {"name": "belongs_to_requester", "value": True},
        ],
    }
    assert runs.approvals_panel()["pending"][0]["preview"] == row.preview

    with pytest.raises(StudioError, match="Write what the model should receive") as refused:
        runs.decide(approval_id=pending.id, action="respond", response="")
    assert refused.value.field == "response"
    runs.decide(approval_id=pending.id, action="respond", response="Refunded by phone (RF-77).")

    assert finished(runs, chat.id)["runs"][0]["answer"] == "Handled."
    assert executed == []
    assert model.requests[1].messages[-1].content == "Refunded by phone (RF-77)."
    row.refresh_from_db()
    assert (row.status, row.action, row.response, row.decided_by.username) == (
        "rejected",
        "respond",
        "Refunded by phone (RF-77).",
        "studio",
    )
    assert row.outcome["outcome"] == "responded"


def test_terminate_stops_the_studio_run_and_cancels_its_other_approval(studio_runs, alice):
    executed = []
    model = ScriptedModel(
        [[call("refund_order", order_id="A-1001", amount=150), call("refund_order", order_id="A-1002", amount=120)]]
    )
    runs = studio_runs(refund_agent(model, executed), on=ApprovalsStore())
    chat = runs.chat_start(agent_name="support", user_id=alice.pk, message="two refunds")
    first, second = until(runs, lambda: len(runs.store.pending()) == 2 and runs.store.pending(), what="both pending")

    runs.decide(approval_id=first.id, action="terminate", reason="Account under review.")

    detail = finished(runs, chat.id)
    assert (detail["status"], detail["runs"][0]["error"]) == ("stopped", "Account under review.")
    assert executed == []
    rows = {a.pk: a for a in Approval.objects.filter(pk__in=[first.id, second.id])}
    assert (rows[first.id].status, rows[first.id].action) == ("rejected", "terminate")
    assert (rows[second.id].status, rows[second.id].decision_reason) == (
        "cancelled",
        f"studio stopped the whole run (approval #{first.id}).",
    )
