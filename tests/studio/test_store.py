"""``MemoryStore``: Studio's default approval store, and the interface every store implements."""

from __future__ import annotations

import re
import threading
import time

import pytest

from anvia.studio import (
    ActingUser,
    AlreadyDecided,
    ApprovalNotFound,
    ApprovalRequest,
    ApprovalStore,
    InvalidDecision,
    MemoryStore,
)


def ask(store: MemoryStore, call_id: str = "call_1", **fields) -> object:
    request = {
        "run_id": "run-1",
        "call_id": call_id,
        "tool_name": "refund_order",
        "args": {"order_id": "A-1", "amount": 150.0},
        "reason": "Refund $150?",
        "reject_message": "Refund was not approved.",
        "requested_by": ActingUser(id=7, label="alice"),
        **fields,
    }
    return store.request(ApprovalRequest(**request))


def test_a_request_is_recorded_once_per_call_and_listed_until_decided():
    store = MemoryStore()
    assert isinstance(store, ApprovalStore)
    first = ask(store)
    assert ask(store) == first
    second = ask(store, "call_2")
    assert (first.id, first.status, first.requested_by) == (1, "pending", "alice")
    assert [r.id for r in store.pending()] == [first.id, second.id]

    decided = store.decide(first.id, approved=False, reason="Already refunded.")
    assert (decided.status, decided.decided_by, decided.decision_reason) == ("rejected", "studio", "Already refunded.")
    assert [r.id for r in store.pending()] == [second.id]
    assert store.get(first.id) == decided


def test_exactly_one_of_many_concurrent_decisions_wins():
    store = MemoryStore()
    record = ask(store)
    start = threading.Barrier(8)
    won, lost = [], []

    def decide(approved: bool):
        start.wait()
        try:
            won.append(store.decide(record.id, approved=approved))
        except AlreadyDecided as error:
            lost.append(str(error))

    threads = [threading.Thread(target=decide, args=(i % 2 == 0,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(won) == 1
    assert len(lost) == 7
    assert lost[0] == f"Approval #{record.id} was already {won[0].status} by studio."


def test_wait_wakes_on_the_decision_and_otherwise_returns_the_pending_record_at_its_deadline():
    store = MemoryStore(reviewer="you")
    record = ask(store)
    started = time.monotonic()
    assert store.wait(record.id, 0.05).status == "pending"
    assert time.monotonic() - started >= 0.05

    waited = []
    waiter = threading.Thread(target=lambda: waited.append(store.wait(record.id, 30)))
    waiter.start()
    store.decide(record.id, approved=True)
    waiter.join(10)
    assert not waiter.is_alive()
    assert (waited[0].status, waited[0].decided_by) == ("approved", "you")


def test_cancel_withdraws_only_a_pending_request_and_unknown_ids_are_not_found():
    store = MemoryStore()
    pending, decided = ask(store), ask(store, "call_2")
    store.decide(decided.id, approved=True)
    assert store.cancel(pending.id, reason="Studio stopped.").status == "cancelled"
    assert store.cancel(decided.id, reason="Studio stopped.").status == "approved"
    with pytest.raises(AlreadyDecided, match=r"was already cancelled\."):
        store.decide(pending.id, approved=True)
    with pytest.raises(ApprovalNotFound, match=r"There is no Studio approval #99\."):
        store.get(99)
    store.record_outcome(decided.id, {"outcome": "ran"})
    assert store.outcome(decided.id) == {"outcome": "ran"}


def test_the_preview_is_kept_and_respond_keeps_the_reviewer_s_words():
    store = MemoryStore()
    preview = {
        "warnings": ["Only $80.00 is left to refund on A-1: $150.00 will fail."],
        "facts": [{"name": "left_to_refund", "value": "$80.00"}],
    }
    record = ask(store, preview=preview)
    assert store.get(record.id).preview == preview

    decided = store.decide(record.id, action="respond", response="Already refunded by phone (RF-77).")
    assert (decided.status, decided.action, decided.response) == (
        "rejected",
        "respond",
        "Already refunded by phone (RF-77).",
    )
    assert store.get(record.id).preview == preview


def test_terminate_cancels_the_runs_other_pending_requests_and_no_others():
    store = MemoryStore()
    first, second = ask(store, "call_1"), ask(store, "call_2")
    other_run = ask(store, "call_1", run_id="run-2")

    stopped = store.decide(second.id, action="terminate", reason="Fraud suspected.")
    assert (stopped.status, stopped.action, stopped.decision_reason) == ("rejected", "terminate", "Fraud suspected.")
    cancelled = store.get(first.id)
    assert (cancelled.status, cancelled.decision_reason) == (
        "cancelled",
        f"studio stopped the whole run (approval #{second.id}).",
    )
    assert [r.id for r in store.pending()] == [other_run.id]


def test_approved_is_short_for_approve_or_reject_and_a_decision_must_say_something():
    store = MemoryStore()
    assert store.decide(ask(store, "call_1").id, approved=True).action == "approve"
    assert store.decide(ask(store, "call_2").id, approved=False).action == "reject"
    pending = ask(store, "call_3")
    refusals = [
        ({}, "action", "Say what to do: approve, reject, respond or terminate."),
        ({"action": "maybe"}, "action", "'maybe' is not an action: approve, reject, respond or terminate."),
        ({"action": "reject", "approved": True}, "action", "approved=True does not go with action 'reject'."),
        ({"action": "respond", "response": "  "}, "response", "Write what the model should receive instead"),
    ]
    for decision, field, message in refusals:
        with pytest.raises(InvalidDecision, match=re.escape(message)) as refused:
            store.decide(pending.id, **decision)
        assert (refused.value.field, refused.value.status) == (field, 400)
    assert store.get(pending.id).pending
