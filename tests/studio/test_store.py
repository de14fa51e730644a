"""``MemoryStore``: Studio's default approval store, and the interface every store implements."""

from __future__ import annotations

import threading
import time

import pytest

from anvia.studio import (
    ActingUser,
    AlreadyDecided,
    ApprovalNotFound,
    ApprovalRequest,
    ApprovalStore,
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
