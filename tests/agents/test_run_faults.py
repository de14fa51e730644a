"""Faults inside one run, executed in the test process: a lost lease, poison runs, a capped number
of attempts, a decision that belongs to another call, too many pending approvals.

The races between real worker processes are in test_worker_race.py; SIGKILL in test_worker_crash.py.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.db.models import F
from django.utils import timezone

from agents.models import AgentRun, Message
from agents.services import (
    run_claim,
    run_execute,
    runs_recover_orphaned,
)
from agents.support import RefundInput, support_agent
from anvia.testing import ScriptedModel, call
from approvals.models import Approval, ApprovalEvent
from approvals.services import ApprovalRequest, approval_decide, approval_request
from shop.models import Refund
from tests.factories import ReviewerFactory
from tests.support.chats import ask

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def model():
    """Swap the support agent's model for a script (``model.script = ScriptedModel(...)``)."""

    class Slot:
        script = None

    slot = Slot()
    original = support_agent.model

    class Delegate:
        name = "scripted"

        async def complete(self, request):
            return await slot.script.complete(request)

    support_agent.model = Delegate()
    try:
        yield slot
    finally:
        support_agent.model = original


def answers(run: AgentRun) -> list[str]:
    return list(Message.objects.filter(run=run, role=Message.Role.ASSISTANT).values_list("content", flat=True))


def test_a_worker_that_lost_its_lease_during_a_model_call_runs_no_tool_and_writes_nothing(alice, queued, model, caplog):
    """The model call outlasted the lease and another worker claimed the run meanwhile (bumping the
    fencing token): the first worker's reply must not start the refund, nor finish the run."""
    caplog.set_level(logging.WARNING, logger="anvia.runs")
    run = ask(alice, "refund order A-1001, $40")

    def taken_over():
        AgentRun.objects.filter(pk=run.pk).update(
            attempts=F("attempts") + 1,
            lease_owner="other-worker",
            lease_expires_at=timezone.now() + timedelta(minutes=1),
        )

    class SlowModel:
        """Meanwhile, another worker claims the run (as after this worker's lease ran out)."""

        async def complete(self, request):
            await sync_to_async(taken_over)()
            return await ScriptedModel([call("refund_order", order_id="A-1001", amount=40)]).complete(request)

    model.script = SlowModel()

    assert run_execute(run_id=run.pk) is None
    assert not Refund.objects.exists(), "the tool never starts without the lease"
    current = AgentRun.objects.get(pk=run.pk)
    assert (current.status, current.attempts, current.lease_owner) == ("running", 2, "other-worker")
    assert current.state is None, "no checkpoint of the old attempt landed"
    assert answers(run) == []
    assert not current.events.filter(type__in=["tool_call", "tool_result", "done"]).exists()
    assert f"run stopped run={run.pk} attempt=1" in caplog.text
    assert "lease lost" in caplog.text


def test_tool_arguments_nested_thousands_deep_fail_the_run_once(alice, queued, model):
    deep = '{"order_id": ' + "[" * 100_000 + "]" * 100_000 + ', "amount": 40}'
    model.script = ScriptedModel([call("refund_order", deep), "never asked"])
    run = ask(alice)

    failed = run_execute(run_id=run.pk)

    assert failed.status == "failed"
    assert "RecursionError" in failed.error
    assert failed.error.startswith("The run stopped on an unexpected error")
    assert (failed.lease_owner, failed.lease_expires_at) == ("", None)
    assert answers(run) == ["Sorry, I couldn't finish handling your request. Please try again, or contact support."]
    assert runs_recover_orphaned() == 0, "a failed run is never retried"
    assert not Refund.objects.exists()


def test_a_state_the_database_refuses_fails_the_run_on_postgresql(alice, queued, model):
    """PostgreSQL's jsonb refuses the NUL character ("\\u0000"); SQLite stores it."""
    model.script = ScriptedModel(["All done\u0000 here."])
    run = ask(alice)

    finished = run_execute(run_id=run.pk)

    if connection.vendor == "postgresql":
        assert finished.status == "failed"
        assert finished.error.startswith("The database refused to save the run's state:"), finished.error
        assert "\x00" not in finished.error
        assert answers(run) == ["Sorry, I couldn't finish handling your request. Please try again, or contact support."]
        assert runs_recover_orphaned() == 0
    else:
        assert connection.vendor == "sqlite"
        assert finished.status == "succeeded", finished.error
        assert answers(run) == ["All done\u0000 here."]


def test_a_run_whose_workers_keep_dying_fails_after_max_attempts_and_its_approvals_are_cancelled(
    alice, queued, settings
):
    settings.ANVIA_RUN_MAX_ATTEMPTS = 5
    run = ask(alice, "refund order A-1001, $150")
    pending, _ = approval_request(
        request=ApprovalRequest(
            run_id=str(run.pk),
            call_id="call_1",
            tool_name="refund_order",
            args={"order_id": "A-1001", "amount": 150.0},
            reason="Review refund of $150.00 for A-1001.",
            requested_by_id=alice.pk,
        )
    )
    for attempt in range(1, 6):
        # A worker takes the run and dies (SIGKILL, OOM) before it ends: its lease runs out.
        taken = run_claim(run_id=run.pk, owner=f"doomed-{attempt}")
        assert taken is not None
        assert taken.interrupted_attempts == attempt - 1
        AgentRun.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
        assert runs_recover_orphaned() == 1

    failed = run_execute(run_id=run.pk)

    assert failed.status == "failed"
    assert (failed.attempts, failed.interrupted_attempts) == (6, 5)
    assert failed.error.startswith("Gave up after 5 attempts"), failed.error
    assert "ANVIA_RUN_MAX_ATTEMPTS=5" in failed.error
    approval = Approval.objects.get(pk=pending.pk)
    assert approval.status == "cancelled"
    assert approval.decision_reason.startswith("The agent run failed: Gave up after 5 attempts")
    assert ApprovalEvent.objects.filter(approval=approval, kind="cancelled").count() == 1
    assert runs_recover_orphaned() == 0
    assert not Refund.objects.exists()
    assert len(answers(run)) == 1


def test_a_decision_made_for_another_call_with_the_same_id_is_never_acted_on(alice, queued, model, settings):
    """A server that numbers calls per reply (``call_0``) and a crash between the approval and the
    checkpoint: the approval on record for ``call_0`` was asked (and approved, edited) for another
    refund. The current ``call_0`` is skipped, with a message the model can act on."""
    settings.ANVIA_APPROVAL_BLOCK_SECONDS = 0.2
    run = ask(alice, "refund order A-1004, $300")
    earlier, _ = approval_request(
        request=ApprovalRequest(
            run_id=str(run.pk),
            call_id="call_0",
            tool_name="refund_order",
            args={"order_id": "A-1001", "amount": 150.0},
            reason="Review refund of $150.00 for A-1001.",
            requested_by_id=alice.pk,
            input_schema=RefundInput.model_json_schema(),
        )
    )
    approval_decide(
        approval_id=earlier.pk,
        reviewer=ReviewerFactory(),
        approved=True,
        edited_args={"order_id": "A-1001", "amount": 120},
    )
    model.script = ScriptedModel(
        [call("refund_order", id="call_0", order_id="A-1004", amount=300), "I could not make that refund."]
    )

    finished = run_execute(run_id=run.pk)

    assert finished.status == "succeeded", finished.error
    assert not Refund.objects.exists(), "neither the edited $120 nor the unapproved $300 refund ran"
    record = next(c for c in finished.state["tool_calls"] if c["call_id"] == "call_0")
    assert record["outcome"] == "skipped"
    assert record["message"].startswith("This call was not run: the approval on record for this call id")
    assert "Call the tool again" in record["message"]
    assert Approval.objects.get(pk=earlier.pk).status == "approved", "the earlier decision stays as it was"
    assert Approval.objects.count() == 1


def test_a_pending_approval_for_another_call_with_the_same_id_is_cancelled(alice, queued, model, settings):
    settings.ANVIA_APPROVAL_BLOCK_SECONDS = 0.2
    run = ask(alice, "refund order A-1004, $300")
    earlier, _ = approval_request(
        request=ApprovalRequest(
            run_id=str(run.pk),
            call_id="call_0",
            tool_name="cancel_order",
            args={"order_id": "A-1004"},
            reason="Review cancellation of order A-1004.",
            requested_by_id=alice.pk,
        )
    )
    model.script = ScriptedModel([call("refund_order", id="call_0", order_id="A-1004", amount=300), "Not done."])

    finished = run_execute(run_id=run.pk)

    assert finished.status == "succeeded", finished.error
    cancelled = Approval.objects.get(pk=earlier.pk)
    assert cancelled.status == "cancelled"
    assert cancelled.decision_reason == (
        "Superseded: the approval on record for this call id was asked for cancel_order, not refund_order."
    )
    assert cancelled.events.filter(kind="cancelled").count() == 1
    assert not Refund.objects.exists()


def test_past_the_pending_approvals_limit_a_call_is_not_put_to_reviewers(alice, queued, settings):
    settings.ANVIA_APPROVAL_BLOCK_SECONDS = 0.1
    settings.ANVIA_APPROVAL_MAX_PENDING_PER_USER = 2
    for _ in range(2):
        assert run_execute(run_id=ask(alice, "refund order A-1001, $150").pk).status == "suspended"
    assert Approval.objects.filter(status="pending").count() == 2

    third = ask(alice, "refund order A-1004, $150")
    finished = run_execute(run_id=third.pk)

    assert finished.status == "succeeded", finished.error
    assert Approval.objects.count() == 2, "no third request reached the reviewers"
    assert answers(third) == [
        "That didn't go through. This request was not sent to a reviewer: 2 earlier requests are already "
        "waiting for one (the limit is 2). Wait until those are decided, then ask again."
    ]
    assert not Refund.objects.filter(order__number="A-1004").exists()
    # Deciding one frees a place.
    approval_decide(approval_id=Approval.objects.first().pk, reviewer=ReviewerFactory(), approved=False)
    fourth = ask(alice, "refund order A-1004, $150")
    assert run_execute(run_id=fourth.pk).status == "suspended"
    assert Approval.objects.filter(status="pending").count() == 2
    assert not Refund.objects.exists()
