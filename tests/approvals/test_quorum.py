"""The two-person rule: ``quorum`` distinct reviewers must approve; the requester never counts; one
rejection rejects; the waiting run wakes only when the quorum is met."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from approvals.decision_channels import get_decision_channel
from approvals.errors import AlreadyDecided, AlreadyVoted, InvalidEditedArgs, SelfApprovalRefused
from approvals.models import Approval, ApprovalEvent, ApprovalVote
from approvals.services import approval_decide, approval_wait
from approvals.signals import approval_decided
from tests.factories import ApprovalFactory, ReviewerFactory
from tests.support.waiting import redis_client_blocked

from .test_services import WAITER, in_thread, named_channel


def two_person(**kwargs) -> Approval:
    return ApprovalFactory(quorum=2, args={"amount": 900.0, "order_id": "A-1004"}, **kwargs)


@pytest.fixture
def decisions() -> list[int]:
    """Ids of the approvals whose decision the app announced (``approval_decided``)."""
    heard: list[int] = []

    def receiver(sender, approval, **kwargs):
        heard.append(approval.pk)

    approval_decided.connect(receiver, dispatch_uid="test_quorum")
    yield heard
    approval_decided.disconnect(dispatch_uid="test_quorum")


@pytest.mark.django_db
def test_one_approval_of_two_leaves_it_pending_and_the_second_approves_it(
    django_capture_on_commit_callbacks, decisions, redis_url
):
    approval = two_person()
    bob, carol = ReviewerFactory(username="bob"), ReviewerFactory(username="carol")
    wake_ups = redis.Redis.from_url(redis_url)
    key = get_decision_channel().key(approval.pk)

    with django_capture_on_commit_callbacks(execute=True):
        first = approval_decide(approval_id=approval.pk, reviewer=bob, approved=True, reason="Looks right.")

    assert first.status == "pending"
    assert first.approvers == ["bob"]
    assert wake_ups.llen(key) == 0  # the run keeps waiting
    assert decisions == []
    voted = approval.events.get(kind="voted")
    assert (voted.actor, voted.data) == (bob, {"reason": "Looks right.", "approvers": ["bob"], "quorum": 2})

    with django_capture_on_commit_callbacks(execute=True):
        second = approval_decide(approval_id=approval.pk, reviewer=carol, approved=True, reason="Agreed.")

    assert (second.status, second.action, second.decided_by) == ("approved", "approve", carol)
    assert second.decision_reason == "Agreed."
    assert second.approvers == ["bob", "carol"]
    assert wake_ups.llen(key) == 1
    assert decisions == [approval.pk]
    decided = approval.events.get(kind="decided")
    assert decided.data["approvers"] == ["bob", "carol"]


@pytest.mark.django_db
def test_the_same_reviewer_approving_twice_is_told_to_find_another():
    approval = two_person()
    bob = ReviewerFactory(username="bob")
    approval_decide(approval_id=approval.pk, reviewer=bob, approved=True)
    with pytest.raises(AlreadyVoted, match=rf"You already approved #{approval.pk}; it needs another reviewer"):
        approval_decide(approval_id=approval.pk, reviewer=bob, approved=True)
    assert Approval.objects.get(pk=approval.pk).status == "pending"
    assert ApprovalVote.objects.filter(approval=approval).count() == 1


@pytest.mark.django_db
def test_the_requester_never_counts_even_as_a_reviewer():
    requester = ReviewerFactory(username="rita")
    approval = two_person(requested_by=requester)
    with pytest.raises(SelfApprovalRefused):
        approval_decide(approval_id=approval.pk, reviewer=requester, approved=True)
    approval_decide(approval_id=approval.pk, reviewer=ReviewerFactory(), approved=True)
    assert Approval.objects.get(pk=approval.pk).status == "pending"
    assert list(ApprovalVote.objects.values_list("reviewer__username", flat=True)) != ["rita"]


@pytest.mark.django_db
def test_one_rejection_rejects_even_after_an_approval(decisions, django_capture_on_commit_callbacks):
    approval = two_person()
    approval_decide(approval_id=approval.pk, reviewer=ReviewerFactory(username="bob"), approved=True)
    with django_capture_on_commit_callbacks(execute=True):
        rejected = approval_decide(
            approval_id=approval.pk, reviewer=ReviewerFactory(username="carol"), approved=False, reason="No receipt."
        )
    assert (rejected.status, rejected.decision_reason) == ("rejected", "No receipt.")
    assert decisions == [approval.pk]
    with pytest.raises(AlreadyDecided, match="already rejected by carol"):
        approval_decide(approval_id=approval.pk, reviewer=ReviewerFactory(), approved=True)
    assert ApprovalVote.objects.filter(approval=approval).count() == 1  # the refused vote is not kept


@pytest.mark.django_db
def test_a_reviewer_who_approved_may_still_reject():
    approval = two_person()
    bob = ReviewerFactory()
    approval_decide(approval_id=approval.pk, reviewer=bob, approved=True)
    rejected = approval_decide(approval_id=approval.pk, reviewer=bob, action="reject", reason="Second thoughts.")
    assert rejected.status == "rejected"


@pytest.mark.django_db
def test_edited_args_are_refused_when_several_must_approve_the_same_call():
    approval = two_person()
    with pytest.raises(InvalidEditedArgs, match="cannot be edited") as refused:
        approval_decide(
            approval_id=approval.pk,
            reviewer=ReviewerFactory(),
            approved=True,
            edited_args={"amount": 500.0, "order_id": "A-1004"},
        )
    assert list(refused.value.fields) == ["args"]
    assert not ApprovalVote.objects.exists()
    # The same args as asked are no edit.
    same = approval_decide(
        approval_id=approval.pk, reviewer=ReviewerFactory(), approved=True, edited_args=dict(approval.args)
    )
    assert same.approvers != []


@pytest.mark.django_db
def test_respond_and_terminate_decide_at_once():
    respond = two_person()
    decided = approval_decide(
        approval_id=respond.pk, reviewer=ReviewerFactory(), action="respond", response="Refunded by phone."
    )
    assert (decided.status, decided.action) == ("rejected", "respond")


# ---- races ----------------------------------------------------------------------------------


def at_once(*calls):
    """Run each ``(target, kwargs)`` in its own thread, all released together; their results."""
    barrier = threading.Barrier(len(calls))

    def released(target, kwargs):
        barrier.wait()
        return target(**kwargs)

    runs = [in_thread(released, target, kwargs) for target, kwargs in calls]
    for thread, _ in runs:
        thread.join(30)
        assert not thread.is_alive()
    return [result for _, result in runs]


ROUNDS = 10


@pytest.mark.django_db(transaction=True)
def test_two_reviewers_approving_at_once_approve_it_once_with_both_votes(redis_url):
    wake_ups = redis.Redis.from_url(redis_url)
    for attempt in range(ROUNDS):
        approval = two_person()
        wake_ups.delete(get_decision_channel().key(approval.pk))  # ids restart after a flush; Redis keeps keys
        bob, carol = ReviewerFactory(), ReviewerFactory()
        results = at_once(
            (approval_decide, {"approval_id": approval.pk, "reviewer": bob, "approved": True}),
            (approval_decide, {"approval_id": approval.pk, "reviewer": carol, "approved": True}),
        )
        assert [r.get("error") for r in results] == [None, None], f"round {attempt}: {results}"
        row = Approval.objects.get(pk=approval.pk)
        assert row.status == "approved", f"round {attempt}"
        assert set(row.approvers) == {bob.username, carol.username}
        # The vote counted second (its transaction got the row lock second) decided it; the other voted.
        voted = ApprovalEvent.objects.get(approval=approval, kind="voted")
        decided = ApprovalEvent.objects.get(approval=approval, kind="decided")
        assert {voted.actor, decided.actor} == {bob, carol}
        assert row.decided_by == decided.actor
        kinds = sorted(ApprovalEvent.objects.filter(approval=approval).values_list("kind", flat=True))
        assert kinds == ["decided", "voted"], f"round {attempt}: {kinds}"
        assert wake_ups.llen(get_decision_channel().key(approval.pk)) == 1  # the waiter wakes once
        # Exactly one of the two answers says "approved"; the other "1 of 2".
        assert sorted(r["value"].status for r in results) == ["approved", "pending"]


@pytest.mark.django_db(transaction=True)
def test_an_approval_and_a_rejection_at_once_end_rejected_and_consistent(redis_url):
    wake_ups = redis.Redis.from_url(redis_url)
    for attempt in range(ROUNDS):
        approval = two_person()
        wake_ups.delete(get_decision_channel().key(approval.pk))  # ids restart after a flush; Redis keeps keys
        bob, carol = ReviewerFactory(), ReviewerFactory()
        results = at_once(
            (approval_decide, {"approval_id": approval.pk, "reviewer": bob, "approved": True}),
            (approval_decide, {"approval_id": approval.pk, "reviewer": carol, "approved": False, "reason": "no"}),
        )
        row = Approval.objects.get(pk=approval.pk)
        assert (row.status, row.decided_by) == ("rejected", carol), f"round {attempt}"
        assert "error" not in results[1], results
        # Bob's approval either landed first (kept, as a vote) or found it rejected (409, no vote).
        votes = list(row.votes.values_list("reviewer", flat=True))
        if "error" in results[0]:
            assert isinstance(results[0]["error"], AlreadyDecided)
            assert votes == []
        else:
            assert results[0]["value"].status == "pending"
            assert votes == [bob.pk]
        assert ApprovalEvent.objects.filter(approval=approval, kind="decided").count() == 1
        assert wake_ups.llen(get_decision_channel().key(approval.pk)) == 1


@pytest.mark.django_db(transaction=True)
def test_a_blocked_waiter_sleeps_through_the_first_approval_and_wakes_on_the_second(redis_url, monkeypatch):
    monkeypatch.setattr("approvals.services.get_decision_channel", lambda: named_channel(redis_url))
    approval = two_person()
    waiter, result = in_thread(approval_wait, approval_id=approval.pk, timeout=30)
    client = redis.Redis.from_url(redis_url)
    redis_client_blocked(client, WAITER)
    approval_decide(approval_id=approval.pk, reviewer=ReviewerFactory(), approved=True)
    assert client.llen(get_decision_channel().key(approval.pk)) == 0  # nothing to wake it
    redis_client_blocked(client, WAITER)  # one approval of two: still asleep
    assert result == {}
    decided_at = time.perf_counter()
    approval_decide(approval_id=approval.pk, reviewer=ReviewerFactory(), approved=True)
    waiter.join(10)
    assert result["value"].approved
    assert result["at"] - decided_at < 1.0


# ---- what reviewers see ---------------------------------------------------------------------


@pytest.mark.django_db
def test_the_api_counts_approvals_and_refuses_a_second_one_and_edits(api_for):
    approval = two_person()
    bob = ReviewerFactory(username="bob")
    url = f"/api/approvals/{approval.pk}/decision/"

    first = api_for(bob).post(url, {"action": "approve"}, format="json")
    assert first.status_code == 200
    assert (first.json()["status"], first.json()["quorum"], first.json()["approvals"]) == ("pending", 2, ["bob"])
    assert first.json()["outcome_text"] == "1 of 2 approvals"

    again = api_for(bob).post(url, {"action": "approve"}, format="json")
    assert again.status_code == 409
    assert again.json()["code"] == "already_voted"
    assert again.json()["detail"].startswith(f"You already approved #{approval.pk}; it needs another reviewer")

    edited = api_for(ReviewerFactory()).post(
        url, {"action": "approve", "args": {"order_id": "A-1004", "amount": 450}}, format="json"
    )
    assert edited.status_code == 400
    assert "cannot be edited" in edited.json()["args"][0]

    last = api_for(ReviewerFactory(username="carol")).post(url, {"approved": True}, format="json")
    assert (last.json()["status"], last.json()["approvals"], last.json()["decided_by"]) == (
        "approved",
        ["bob", "carol"],
        "carol",
    )


@pytest.mark.django_db
def test_the_queue_shows_one_of_two_approvals_and_who(client):
    approval = two_person()
    bob, carol = ReviewerFactory(username="bob"), ReviewerFactory(username="carol")
    approval_decide(approval_id=approval.pk, reviewer=bob, approved=True)

    client.force_login(carol)
    page = client.get("/review/").content.decode()
    assert "1 of 2 approvals" in page
    assert "approved by bob" in page
    pending = client.get("/review/pending.json").json()["approvals"][0]
    assert (pending["outcome_text"], pending["approvals"], pending["quorum"]) == ("1 of 2 approvals", ["bob"], 2)
    detail = client.get(f"/review/{approval.pk}/").content.decode()
    assert 'value="approve"' in detail
    assert "2 different reviewers must approve it (1 of 2 approvals: bob)" in detail


@pytest.mark.django_db
def test_a_reviewer_who_approved_is_told_it_needs_another_and_has_no_approve_button(client):
    approval = two_person()
    bob = ReviewerFactory(username="bob")
    client.force_login(bob)
    response = client.post(f"/review/{approval.pk}/", {"decision": "approve", "reason": ""}, follow=True)
    page = response.content.decode()
    assert f"Approved #{approval.pk} refund_order: 1 of 2 approvals." in page

    detail = client.get(f"/review/{approval.pk}/").content.decode()
    assert "You approved it: it needs another reviewer." in detail
    assert 'value="approve"' not in detail
    assert 'value="reject"' in detail  # one rejection still rejects

    again = client.post(f"/review/{approval.pk}/", {"decision": "approve", "reason": ""})
    assert again.status_code == 409
    assert "it needs another reviewer" in again.content.decode()


@pytest.mark.django_db
def test_the_admin_shows_who_approved_so_far(admin_client):
    approval = two_person()
    approval_decide(approval_id=approval.pk, reviewer=ReviewerFactory(username="bob"), approved=True)
    listing = admin_client.get("/admin/approvals/approval/").content.decode()
    assert "1 of 2 approvals: bob" in listing
    change = admin_client.get(f"/admin/approvals/approval/{approval.pk}/change/").content.decode()
    assert "1 of 2 approvals: bob" in change


@pytest.mark.django_db
def test_bulk_approval_counts_as_one_vote_and_says_so(client, admin_client):
    first, second = two_person(), two_person()
    client.force_login(ReviewerFactory(username="bob"))
    page = client.post("/review/bulk/", {"decision": "approve", "ids": [first.pk]}, follow=True).content.decode()
    assert f"Approved #{first.pk}: 1 of 2 approvals; it needs another reviewer." in page
    assert Approval.objects.get(pk=first.pk).status == "pending"

    page = admin_client.post(
        "/admin/approvals/approval/",
        {"action": "approve_selected", "_selected_action": [second.pk], "confirm": "yes"},
        follow=True,
    ).content.decode()
    assert f"Approved #{second.pk} (refund_order): 1 of 2 approvals; it needs another reviewer." in page
