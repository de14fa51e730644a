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
from tests.studio.conftest import finished, pending_approval, refund_agent

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
