from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, replace
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from approvals.decision_channels import InProcessDecisionChannel, RedisDecisionChannel, get_decision_channel
from approvals.errors import AlreadyDecided, ApprovalExpired, InvalidEditedArgs, NotAReviewer, SelfApprovalRefused
from approvals.models import Approval, ApprovalEvent
from approvals.services import (
    ApprovalRequest,
    Decision,
    approval_decide,
    approval_request,
    approval_wait,
    approvals_expire_overdue,
    wait_for_decision,
)
from scripts.embedded_redis import embedded_redis, free_port
from tests.factories import ApprovalFactory, ReviewerFactory, UserFactory
from tests.support.waiting import redis_client_blocked

WAITER = f"anvia-test-{os.getpid()}-decision-waiter"  # suites may share a Redis


def a_request(**overrides) -> ApprovalRequest:
    values = {
        "run_id": "run-1",
        "call_id": "call_1",
        "tool_name": "refund_order",
        "args": {"order_id": "A-1001", "amount": 150.0},
        "reason": "Review refund of $150 for A-1001.",
        "reject_message": "Refund was not approved.",
    }
    return ApprovalRequest(**{**values, **overrides})


def named_channel(url: str, **options) -> RedisDecisionChannel:
    """The decision channel the settings make, on ``url``, its connections named ``WAITER`` in
    Redis's client list."""
    return RedisDecisionChannel(f"{url}?client_name={WAITER}", key_prefix=settings.ANVIA_REDIS_KEY_PREFIX, **options)


def in_thread(target, *args, **kwargs):
    """Run ``target`` in a thread that closes its own DB connection; returns (thread, results)."""
    results = {}

    def run():
        try:
            results["value"] = target(*args, **kwargs)
        except Exception as error:
            results["error"] = error
        finally:
            results["at"] = time.perf_counter()
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, results


@pytest.mark.django_db
def test_request_is_idempotent_per_run_and_call_and_stores_canonical_args(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        first, created = approval_request(request=a_request(args={"order_id": "A-1001", "amount": 150.0}))
    again, created_again = approval_request(request=a_request(args={"amount": 150.0, "order_id": "A-1001"}))
    assert created is True
    assert created_again is False
    assert first.pk == again.pk
    assert first.status == "pending"
    assert list(first.args) == ["amount", "order_id"]
    assert len(first.args_hash) == 64
    assert first.expires_at > timezone.now() + timedelta(hours=23)
    assert list(first.events.values_list("kind", flat=True)) == ["requested", "notified"]


@pytest.mark.django_db
def test_decide_records_who_when_and_why():
    approval = ApprovalFactory()
    reviewer = ReviewerFactory()
    decided = approval_decide(approval_id=approval.pk, reviewer=reviewer, approved=False, reason="Too large.")
    assert decided.status == "rejected"
    assert decided.decided_by == reviewer
    assert decided.decision_reason == "Too large."
    assert decided.decided_at is not None
    event = approval.events.get(kind="decided")
    assert event.actor == reviewer
    assert event.data["reason"] == "Too large."


@pytest.mark.django_db
def test_the_requester_can_never_decide_their_own_request():
    reviewer = ReviewerFactory()
    approval = ApprovalFactory(requested_by=reviewer)
    with pytest.raises(SelfApprovalRefused, match="someone else must decide"):
        approval_decide(approval_id=approval.pk, reviewer=reviewer, approved=True)
    approval.refresh_from_db()
    assert approval.status == "pending"


@pytest.mark.django_db
def test_only_staff_with_the_permission_decide():
    approval = ApprovalFactory()
    for user in (UserFactory(), UserFactory(is_staff=True), ReviewerFactory(can_decide=False)):
        with pytest.raises(NotAReviewer):
            approval_decide(approval_id=approval.pk, reviewer=user, approved=True)
    assert Approval.objects.get(pk=approval.pk).status == "pending"


@pytest.mark.django_db
def test_a_second_decision_is_refused_naming_who_decided():
    approval = ApprovalFactory()
    first, second = ReviewerFactory(username="ann"), ReviewerFactory(username="ben")
    approval_decide(approval_id=approval.pk, reviewer=first, approved=True)
    with pytest.raises(AlreadyDecided, match=r"already approved by ann at \d{4}-\d\d-\d\d"):
        approval_decide(approval_id=approval.pk, reviewer=second, approved=False)
    assert Approval.objects.get(pk=approval.pk).decided_by == first


@pytest.mark.django_db
def test_edited_args_are_validated_and_stored_beside_the_originals():
    approval = ApprovalFactory()
    reviewer = ReviewerFactory()
    with pytest.raises(InvalidEditedArgs) as error:
        approval_decide(
            approval_id=approval.pk, reviewer=reviewer, approved=True, edited_args={"order_id": "A-1001", "amount": -1}
        )
    assert list(error.value.fields) == ["args.amount"]
    with pytest.raises(InvalidEditedArgs) as error:
        approval_decide(approval_id=approval.pk, reviewer=reviewer, approved=True, edited_args={"amount": 90})
    assert list(error.value.fields) == ["args.order_id"]
    assert Approval.objects.get(pk=approval.pk).status == "pending"

    decided = approval_decide(
        approval_id=approval.pk, reviewer=reviewer, approved=True, edited_args={"order_id": "A-1001", "amount": 90}
    )
    assert decided.args == {"amount": 150.0, "order_id": "A-1001"}
    assert decided.edited_args == {"amount": 90, "order_id": "A-1001"}


@pytest.mark.django_db
def test_expired_approvals_count_as_rejections_and_refuse_late_decisions():
    overdue = ApprovalFactory(expires_at=timezone.now() - timedelta(seconds=1))
    fresh = ApprovalFactory()
    assert approvals_expire_overdue() == 1
    overdue.refresh_from_db()
    assert overdue.status == "expired"
    assert overdue.decision_reason == "expired"
    assert Approval.objects.get(pk=fresh.pk).status == "pending"
    assert overdue.events.filter(kind="expired").count() == 1
    with pytest.raises(ApprovalExpired, match="has expired"):
        approval_decide(approval_id=overdue.pk, reviewer=ReviewerFactory(), approved=True)
    decision = approval_wait(approval_id=overdue.pk, timeout=1)
    assert decision.status == "expired"
    assert decision.approved is False


@pytest.mark.django_db
def test_a_waiter_expires_an_overdue_approval_itself():
    overdue = ApprovalFactory(expires_at=timezone.now() - timedelta(seconds=1))
    assert approval_wait(approval_id=overdue.pk, timeout=5).status == "expired"


@pytest.mark.django_db
def test_a_decision_made_before_the_waiter_arrives_is_returned_at_once():
    approval, _ = approval_request(request=a_request())
    approval_decide(approval_id=approval.pk, reviewer=ReviewerFactory(), approved=True)
    started = time.perf_counter()
    decision = wait_for_decision(request=a_request(), timeout=10)
    assert decision.approved
    assert time.perf_counter() - started < 1


@pytest.mark.django_db
def test_timeout_returns_none_while_pending():
    started = time.perf_counter()
    assert wait_for_decision(request=a_request(), timeout=0.3) is None
    assert 0.25 < time.perf_counter() - started < 2


@pytest.mark.django_db(transaction=True)
def test_a_decision_wakes_a_blocked_waiter_within_milliseconds(redis_url, monkeypatch):
    monkeypatch.setattr("approvals.services.get_decision_channel", lambda: named_channel(redis_url))
    approval, _ = approval_request(request=a_request())
    waiter, result = in_thread(approval_wait, approval_id=approval.pk, timeout=30)
    # Asleep in BLPOP: the wait slice is 5 s, so only a wake-up is fast.
    redis_client_blocked(redis.Redis.from_url(redis_url), WAITER)
    decided_at = time.perf_counter()
    approval_decide(approval_id=approval.pk, reviewer=ReviewerFactory(), approved=True, reason="ok")
    waiter.join(10)
    assert result["value"].approved
    assert result["value"].reason == "ok"
    assert result["at"] - decided_at < 1.0


@pytest.mark.django_db(transaction=True)
def test_twenty_reviewers_deciding_at_once_give_one_decision_and_one_wake_up(redis_url):
    wake_ups = redis.Redis.from_url(redis_url)
    for attempt in range(5):
        approval = ApprovalFactory()
        reviewers = [ReviewerFactory() for _ in range(20)]
        barrier = threading.Barrier(20)

        def decide(reviewer, approval_id=approval.pk, barrier=barrier):
            barrier.wait()
            return approval_decide(approval_id=approval_id, reviewer=reviewer, approved=True, reason=reviewer.username)

        runs = [in_thread(decide, reviewer) for reviewer in reviewers]
        for thread, _ in runs:
            thread.join(30)
        wins = [r["value"] for _, r in runs if "value" in r]
        losses = [r["error"] for _, r in runs if "error" in r]
        assert len(wins) == 1, f"attempt {attempt}: {len(wins)} winners"
        assert len(losses) == 19
        assert all(isinstance(loss, AlreadyDecided) for loss in losses), losses
        row = Approval.objects.get(pk=approval.pk)
        assert row.decided_by == wins[0].decided_by
        assert row.decision_reason == wins[0].decided_by.username
        assert ApprovalEvent.objects.filter(approval=approval, kind="decided").count() == 1
        assert wake_ups.llen(get_decision_channel().key(approval.pk)) == 1


@pytest.mark.django_db(transaction=True)
def test_redis_going_away_while_waiting_costs_latency_never_the_decision(monkeypatch):
    with embedded_redis() as url:
        channel = named_channel(url, slice_seconds=1.0)
        monkeypatch.setattr("approvals.services.get_decision_channel", lambda: channel)
        approval, _ = approval_request(request=a_request())
        waiter, result = in_thread(approval_wait, approval_id=approval.pk, timeout=30)
        redis_client_blocked(redis.Redis.from_url(url), WAITER)
    # Redis is gone now, with the waiter asleep in it: the decider cannot publish, and the waiter
    # finds the decision when it re-reads the row.
    approval_decide(approval_id=approval.pk, reviewer=ReviewerFactory(), approved=True)
    waiter.join(10)
    assert not waiter.is_alive(), "the waiter never found the decision without Redis"
    assert "error" not in result, result.get("error")
    assert result["value"].approved


@pytest.mark.django_db(transaction=True)
def test_redis_down_and_back_up_between_publish_and_wait(monkeypatch):
    """The decision lands while Redis is down, the waiter blocks later: it still gets it."""
    port = free_port()
    channel = RedisDecisionChannel(f"redis://127.0.0.1:{port}/0", slice_seconds=1.0)
    monkeypatch.setattr("approvals.services.get_decision_channel", lambda: channel)
    approval, _ = approval_request(request=a_request())
    approval_decide(approval_id=approval.pk, reviewer=ReviewerFactory(), approved=False, reason="no")
    with embedded_redis(port=port):
        decision = approval_wait(approval_id=approval.pk, timeout=5)
    assert decision.status == "rejected"
    assert decision.reason == "no"


def test_the_configured_channel_is_redis():
    assert isinstance(get_decision_channel(), RedisDecisionChannel)


def _carried(approval: Approval, *, requested_at: str | None = None, **changes) -> dict:
    return {
        "requested_at": requested_at or approval.created_at.isoformat(),
        "decision": asdict(replace(Decision.of(approval), **changes)),
    }


@pytest.mark.django_db(transaction=True)
def test_the_wake_up_carries_the_committed_decision_so_the_waiter_reads_the_row_once(redis_url, monkeypatch):
    monkeypatch.setattr("approvals.services.get_decision_channel", lambda: named_channel(redis_url))
    approval, _ = approval_request(request=a_request())
    reads = []
    real_get = Approval.objects.select_related

    def counting_select_related(*fields):
        reads.append(threading.current_thread().name)
        return real_get(*fields)

    monkeypatch.setattr(Approval.objects, "select_related", counting_select_related)
    waiter, result = in_thread(approval_wait, approval_id=approval.pk, timeout=30)
    redis_client_blocked(redis.Redis.from_url(redis_url), WAITER)
    decided = approval_decide(
        approval_id=approval.pk,
        reviewer=ReviewerFactory(),
        action="approve",
        edited_args={"order_id": "A-1001", "amount": 90.0},
    )
    waiter.join(10)

    assert result["value"] == Decision.of(Approval.objects.select_related("decided_by").get(pk=approval.pk))
    assert result["value"].args == {"order_id": "A-1001", "amount": 90.0}
    assert result["value"].edited
    assert result["value"].decided_by == decided.decided_by.get_username()
    assert reads.count(waiter.name) == 1, "read once before blocking; the decision came with the wake-up"


@pytest.mark.django_db(transaction=True)
def test_a_wake_up_without_the_decision_sends_the_waiter_back_to_the_row(redis_url, monkeypatch):
    """A wake-up from an older sender (a bare token) or a lost one: the row decides."""
    channel = named_channel(redis_url)
    monkeypatch.setattr("approvals.services.get_decision_channel", lambda: channel)
    monkeypatch.setattr("approvals.services._decision_for_wake_up", lambda approval: None)
    approval, _ = approval_request(request=a_request())
    waiter, result = in_thread(approval_wait, approval_id=approval.pk, timeout=30)
    redis_client_blocked(redis.Redis.from_url(redis_url), WAITER)

    approval_decide(approval_id=approval.pk, reviewer=ReviewerFactory(), approved=False, reason="no")
    waiter.join(10)

    assert result["value"].status == "rejected"
    assert result["value"].reason == "no"


@pytest.mark.django_db(transaction=True)
def test_a_carried_decision_is_trusted_only_if_final_and_for_this_approval(redis_url, monkeypatch):
    channel = named_channel(redis_url)
    monkeypatch.setattr("approvals.services.get_decision_channel", lambda: channel)
    approval, _ = approval_request(request=a_request())
    other, _ = approval_request(request=a_request(call_id="call_2"))
    # Neither of these may be taken for a decision: the row is still pending, so the waiter
    # reads it again after each, then its time runs out.
    channel.publish(approval.pk, _carried(approval))  # still "pending"
    channel.publish(approval.pk, _carried(other, status="approved"))  # another approval's
    # The same id in another database sharing the Redis (ids start again): another creation time.
    channel.publish(approval.pk, _carried(approval, status="approved", requested_at="2020-01-01T00:00:00+00:00"))
    channel.publish(
        approval.pk,
        {
            "requested_at": approval.created_at.isoformat(),
            "decision": {"approval_id": approval.pk, "status": "approved"},
        },
    )

    assert approval_wait(approval_id=approval.pk, timeout=1.5) is None
    assert Approval.objects.get(pk=approval.pk).status == "pending"


def test_the_in_process_channel_carries_the_decision_too():
    channel = InProcessDecisionChannel()
    channel.publish(7, {"approval_id": 7, "status": "approved"})
    channel.publish(8)

    assert channel.wait(7, 1) == {"approval_id": 7, "status": "approved"}
    assert channel.wait(8, 1) is True
    assert channel.wait(9, 0.01) is False
