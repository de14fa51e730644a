from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from approvals.models import Approval, ApprovalEvent
from approvals.services import approval_decide
from tests.factories import PASSWORD, ApprovalEventFactory, ApprovalFactory, ReviewerFactory, UserFactory

pytestmark = pytest.mark.django_db

LIST_URL = "/api/approvals/"
APPROVAL_FIELDS = {
    "id",
    "status",
    "tool_name",
    "agent_name",
    "reason",
    "preview",
    "args",
    "edited_args",
    "quorum",
    "approvals",
    "requested_by",
    "conversation_id",
    "run_id",
    "call_id",
    "created_at",
    "expires_at",
    "decided_by",
    "decided_at",
    "action",
    "decision_reason",
    "response",
    "outcome",
    "outcome_text",
    "grant",
    "approved_by_grant",
}


def detail_url(approval_id: int) -> str:
    return f"/api/approvals/{approval_id}/"


def decision_url(approval_id: int) -> str:
    return f"/api/approvals/{approval_id}/decision/"


def approval_created(minutes_ago: int, **kwargs) -> Approval:
    approval = ApprovalFactory(**kwargs)
    Approval.objects.filter(pk=approval.pk).update(created_at=timezone.now() - timedelta(minutes=minutes_ago))
    return approval


def decided(approval: Approval, *, by, approved: bool = True, reason: str = "") -> Approval:
    return approval_decide(approval_id=approval.pk, reviewer=by, approved=approved, reason=reason)


# ---- list -------------------------------------------------------------------------------------


def test_list_shows_newest_first_with_usernames(reviewer_api):
    older = approval_created(10, requested_by=UserFactory(username="carol"))
    newer = approval_created(1)

    response = reviewer_api.get(LIST_URL)

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert [row["id"] for row in body["results"]] == [newer.pk, older.pk]
    row = body["results"][1]
    assert set(row) == APPROVAL_FIELDS
    assert row["requested_by"] == "carol"
    assert row["args"] == {"amount": 150.0, "order_id": "A-1001"}
    assert row["status"] == "pending"
    assert row["decided_by"] is None


def test_list_filters_by_status(reviewer_api):
    pending = ApprovalFactory()
    approved = decided(ApprovalFactory(), by=ReviewerFactory())
    rejected = decided(ApprovalFactory(), by=ReviewerFactory(), approved=False)

    def ids(status: str) -> list[int]:
        response = reviewer_api.get(LIST_URL, {"status": status})
        assert response.status_code == 200
        return [row["id"] for row in response.json()["results"]]

    assert ids("pending") == [pending.pk]
    assert ids("approved") == [approved.pk]
    assert ids("rejected") == [rejected.pk]
    assert ids("expired") == []
    assert sorted(ids("")) == sorted([pending.pk, approved.pk, rejected.pk])  # an empty form field: no filter


@pytest.mark.parametrize("status", ["bogus", "PENDING", "pending,approved"])
def test_list_refuses_an_unknown_status_naming_the_parameter(reviewer_api, status):
    response = reviewer_api.get(LIST_URL, {"status": status})

    assert response.status_code == 400
    assert list(response.json()) == ["status"]


def test_list_is_paginated(reviewer_api):
    for minutes in range(3):
        approval_created(minutes)

    first = reviewer_api.get(LIST_URL, {"page_size": 2}).json()
    second = reviewer_api.get(LIST_URL, {"page_size": 2, "page": 2}).json()

    assert first["count"] == 3
    assert len(first["results"]) == 2
    assert first["next"] is not None
    assert len(second["results"]) == 1
    assert {row["id"] for row in first["results"] + second["results"]} == set(
        Approval.objects.values_list("pk", flat=True)
    )


def test_list_queries_do_not_grow_with_rows(reviewer_api):
    decided(ApprovalFactory(), by=ReviewerFactory())
    reviewer_api.get(LIST_URL)  # warm the reviewer's permission cache
    with CaptureQueriesContext(connection) as one_row:
        assert reviewer_api.get(LIST_URL).status_code == 200

    for _ in range(5):
        decided(ApprovalFactory(), by=ReviewerFactory())
    with CaptureQueriesContext(connection) as six_rows:
        assert len(reviewer_api.get(LIST_URL).json()["results"]) == 6

    assert len(six_rows) == len(one_row)


# ---- detail -----------------------------------------------------------------------------------


def test_detail_includes_events_with_their_actors(reviewer_api):
    approval = ApprovalFactory()
    ApprovalEventFactory(approval=approval, kind=ApprovalEvent.Kind.REQUESTED, data={"run_id": "run-1"})
    decided(approval, by=ReviewerFactory(username="bob"), reason="fine")

    response = reviewer_api.get(detail_url(approval.pk))

    assert response.status_code == 200
    body = response.json()
    assert set(body) == APPROVAL_FIELDS | {"policy_rule", "facts", "superseded", "receipt", "events"}
    assert body["status"] == "approved"
    assert body["decided_by"] == "bob"
    assert [(e["kind"], e["actor"]) for e in body["events"]] == [("requested", None), ("decided", "bob")]
    assert body["events"][0]["data"] == {"run_id": "run-1"}
    assert body["events"][1]["data"] == {
        "status": "approved",
        "action": "approve",
        "reason": "fine",
        "edited_args": None,
    }
    assert all(e["created_at"] for e in body["events"])


def test_detail_queries_do_not_grow_with_events(reviewer_api):
    approval = ApprovalFactory()
    ApprovalEventFactory(approval=approval, kind=ApprovalEvent.Kind.REQUESTED, actor=UserFactory())
    reviewer_api.get(detail_url(approval.pk))
    with CaptureQueriesContext(connection) as one_event:
        reviewer_api.get(detail_url(approval.pk))

    for _ in range(4):
        ApprovalEventFactory(approval=approval, kind=ApprovalEvent.Kind.NOTIFIED, actor=UserFactory())
    with CaptureQueriesContext(connection) as five_events:
        assert len(reviewer_api.get(detail_url(approval.pk)).json()["events"]) == 5

    assert len(five_events) == len(one_event)


def test_detail_of_an_unknown_approval_is_404(reviewer_api):
    response = reviewer_api.get(detail_url(999999))

    assert response.status_code == 404
    assert response.json() == {"detail": "Approval #999999 does not exist."}


# ---- who may read and decide ------------------------------------------------------------------


def staff_without_permission():
    return ReviewerFactory(can_decide=False)


def permission_without_staff():
    user = UserFactory()
    user.user_permissions.add(Permission.objects.get(codename="decide_approval"))
    return user


def inactive_reviewer():
    return ReviewerFactory(is_active=False)


@pytest.mark.parametrize("make_user", [UserFactory, staff_without_permission, permission_without_staff])
def test_non_reviewers_get_403_everywhere(api_for, make_user):
    approval = ApprovalFactory()
    client = api_for(make_user())

    for response in (
        client.get(LIST_URL),
        client.get(detail_url(approval.pk)),
        client.post(decision_url(approval.pk), {"approved": True}, format="json"),
    ):
        assert response.status_code == 403
        assert "decide approvals" in response.json()["detail"]
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING


def test_anonymous_gets_403_because_session_auth_comes_first():
    # DRF answers 401 only when the first authentication class sends a WWW-Authenticate header;
    # SessionAuthentication (first in settings) sends none, so DRF answers 403.
    approval = ApprovalFactory()
    client = APIClient()

    for response in (
        client.get(LIST_URL),
        client.get(detail_url(approval.pk)),
        client.post(decision_url(approval.pk), {"approved": True}, format="json"),
    ):
        assert response.status_code == 403
        assert response.json() == {"detail": "Authentication credentials were not provided."}


def test_token_auth_lets_a_reviewer_decide(reviewer):
    approval = ApprovalFactory()
    token = Token.objects.create(user=reviewer)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")

    assert client.get(LIST_URL).status_code == 200
    response = client.post(decision_url(approval.pk), {"approved": True}, format="json")

    assert response.status_code == 200
    assert response.json()["decided_by"] == reviewer.username


def test_a_wrong_token_is_refused():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")

    response = client.get(LIST_URL)

    assert response.status_code == 403
    assert response.json() == {"detail": "Invalid token."}


def test_session_auth_needs_the_csrf_token_to_decide(reviewer):
    approval = ApprovalFactory()
    client = APIClient(enforce_csrf_checks=True)
    assert client.login(username=reviewer.username, password=PASSWORD)

    assert client.get(LIST_URL).status_code == 200
    response = client.post(decision_url(approval.pk), {"approved": True}, format="json")

    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING


# ---- decide -----------------------------------------------------------------------------------


def test_approve_answers_the_decided_approval(reviewer_api, reviewer):
    approval = ApprovalFactory()

    response = reviewer_api.post(decision_url(approval.pk), {"approved": True, "reason": "Eligible."}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == approval.pk
    assert body["status"] == "approved"
    assert body["decided_by"] == "rita"
    assert body["decided_at"] is not None
    assert body["decision_reason"] == "Eligible."
    assert body["edited_args"] is None
    assert [e["kind"] for e in body["events"]] == ["decided"]
    approval.refresh_from_db()
    assert (approval.status, approval.decided_by, approval.decision_reason) == ("approved", reviewer, "Eligible.")


def test_reject_without_a_reason(reviewer_api):
    approval = ApprovalFactory()

    response = reviewer_api.post(decision_url(approval.pk), {"approved": False}, format="json")

    assert response.status_code == 200
    assert response.json()["status"] == "rejected"
    assert response.json()["decision_reason"] == ""


def test_an_approved_decision_shows_in_the_list_afterwards(reviewer_api):
    approval = ApprovalFactory()
    assert [row["id"] for row in reviewer_api.get(LIST_URL, {"status": "pending"}).json()["results"]] == [approval.pk]

    reviewer_api.post(decision_url(approval.pk), {"approved": True, "reason": "ok"}, format="json")

    assert reviewer_api.get(LIST_URL, {"status": "pending"}).json()["results"] == []
    [row] = reviewer_api.get(LIST_URL, {"status": "approved"}).json()["results"]
    assert (row["id"], row["decided_by"], row["decision_reason"]) == (approval.pk, "rita", "ok")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "action"),
        ({"reason": "no verdict"}, "action"),
        ({"action": "explode"}, "action"),
        ({"action": "approve", "approved": False}, "action"),
        ({"action": "respond"}, "response"),
        ({"action": "respond", "response": "   "}, "response"),
        ({"action": "terminate", "args": {"order_id": "A-1001", "amount": 5}}, "args"),
        ({"approved": None}, "approved"),
        ({"approved": "yes"}, "approved"),
        ({"approved": "true"}, "approved"),
        ({"approved": 1}, "approved"),
        ({"approved": True, "reason": ["a", "list"]}, "reason"),
        ({"approved": True, "reason": "x" * 2001}, "reason"),
        ({"approved": True, "args": [150, "A-1001"]}, "args"),
        ({"approved": True, "args": "amount=10"}, "args"),
    ],
)
def test_a_bad_body_is_400_naming_the_field(reviewer_api, body, field):
    approval = ApprovalFactory()

    response = reviewer_api.post(decision_url(approval.pk), body, format="json")

    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert all(isinstance(message, str) for message in response.json()[field])
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING


def test_a_body_that_is_not_an_object_is_400(reviewer_api):
    response = reviewer_api.post(decision_url(ApprovalFactory().pk), [True], format="json")

    assert response.status_code == 400
    assert list(response.json()) == ["non_field_errors"]


def test_a_form_body_is_415(reviewer_api):
    response = reviewer_api.post(decision_url(ApprovalFactory().pk), {"approved": "true"})

    assert response.status_code == 415


def test_edited_args_are_stored_beside_the_originals(reviewer_api):
    approval = ApprovalFactory(args={"amount": 150.0, "order_id": "A-1001"})

    response = reviewer_api.post(
        decision_url(approval.pk), {"approved": True, "args": {"order_id": "A-1001", "amount": 100}}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["args"] == {"amount": 150.0, "order_id": "A-1001"}
    assert response.json()["edited_args"] == {"amount": 100, "order_id": "A-1001"}
    approval.refresh_from_db()
    assert approval.args == {"amount": 150.0, "order_id": "A-1001"}
    assert approval.edited_args == {"amount": 100, "order_id": "A-1001"}


def test_edited_args_equal_to_the_originals_are_no_edit(reviewer_api):
    approval = ApprovalFactory(args={"amount": 150.0, "order_id": "A-1001"})

    response = reviewer_api.post(
        decision_url(approval.pk), {"approved": True, "args": {"order_id": "A-1001", "amount": 150.0}}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["edited_args"] is None


def test_invalid_edited_args_are_400_naming_the_argument(reviewer_api):
    approval = ApprovalFactory()

    response = reviewer_api.post(
        decision_url(approval.pk), {"approved": True, "args": {"order_id": "A-1001", "amount": -5}}, format="json"
    )

    assert response.status_code == 400
    assert list(response.json()) == ["args"]
    assert list(response.json()["args"]) == ["amount"]
    assert response.json()["args"]["amount"] == ["Amount must be more than $0."]
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING
    assert approval.edited_args is None


def test_edited_args_missing_a_required_argument_name_it(reviewer_api):
    approval = ApprovalFactory()

    response = reviewer_api.post(decision_url(approval.pk), {"approved": True, "args": {"amount": 20}}, format="json")

    assert response.status_code == 400
    assert list(response.json()["args"]) == ["order_id"]


def test_nested_invalid_edited_args_are_named_by_their_dotted_path(reviewer_api):
    approval = ApprovalFactory(
        args={"items": [{"sku": "S-1"}]},
        input_schema={
            "type": "object",
            "properties": {
                "items": {"type": "array", "items": {"type": "object", "properties": {"sku": {"type": "string"}}}}
            },
        },
    )

    response = reviewer_api.post(
        decision_url(approval.pk), {"approved": True, "args": {"items": [{"sku": 7}]}}, format="json"
    )

    assert response.status_code == 400
    assert list(response.json()["args"]) == ["items.0.sku"]


def test_editing_args_while_rejecting_is_400_about_args_as_a_whole(reviewer_api):
    approval = ApprovalFactory()

    response = reviewer_api.post(decision_url(approval.pk), {"approved": False, "args": {"amount": 1}}, format="json")

    assert response.status_code == 400
    assert response.json() == {"args": ["Edited arguments are only accepted when approving."]}


def test_the_requester_cannot_decide_their_own_request(reviewer_api, reviewer):
    approval = ApprovalFactory(requested_by=reviewer)

    response = reviewer_api.post(decision_url(approval.pk), {"approved": True}, format="json")

    assert response.status_code == 403
    assert response.json() == {
        "detail": "You asked for this action, so someone else must decide it.",
        "code": "self_approval_refused",
    }
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING


def test_deciding_an_unknown_approval_is_404(reviewer_api):
    response = reviewer_api.post(decision_url(999999), {"approved": True}, format="json")

    assert response.status_code == 404
    assert response.json() == {"detail": "Approval #999999 does not exist."}


def test_a_second_decision_is_409_saying_who_decided_and_when(reviewer_api, api_for):
    approval = ApprovalFactory()
    first = api_for(ReviewerFactory(username="bob")).post(decision_url(approval.pk), {"approved": True}, format="json")
    assert first.status_code == 200

    response = reviewer_api.post(decision_url(approval.pk), {"approved": False, "reason": "too late"}, format="json")

    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "already_decided"
    assert f"#{approval.pk} was already approved by bob at " in body["detail"]
    assert (body["status"], body["decided_by"], body["decided_at"]) == ("approved", "bob", first.json()["decided_at"])
    approval.refresh_from_db()
    assert (approval.status, approval.decided_by.username) == ("approved", "bob")


def test_deciding_after_the_expiry_time_is_409(reviewer_api):
    approval = ApprovalFactory(expires_at=timezone.now() - timedelta(minutes=1))

    response = reviewer_api.post(decision_url(approval.pk), {"approved": True}, format="json")

    assert response.status_code == 409
    assert response.json()["code"] == "approval_expired"
    assert "expired" in response.json()["detail"]
    # Too late to decide, and now marked so: the waiting run hears "expired" without waiting for the sweep.
    approval.refresh_from_db()
    assert approval.status == Approval.Status.EXPIRED


def test_deciding_an_expired_approval_is_409(reviewer_api):
    approval = ApprovalFactory(status=Approval.Status.EXPIRED, decided_at=timezone.now())

    response = reviewer_api.post(decision_url(approval.pk), {"approved": True}, format="json")

    assert response.status_code == 409
    assert response.json()["code"] == "approval_expired"
    assert response.json()["detail"].startswith(f"Approval #{approval.pk} has expired")


# ---- concurrency ------------------------------------------------------------------------------

DECIDERS = 20


@pytest.mark.django_db(transaction=True)
def test_concurrent_decisions_exactly_one_wins(api_for):
    approval = ApprovalFactory()
    reviewers = [ReviewerFactory() for _ in range(DECIDERS)]
    barrier = threading.Barrier(DECIDERS)
    results: list = [None] * DECIDERS

    def decide(index: int) -> None:
        try:
            client = api_for(reviewers[index])
            barrier.wait(timeout=30)
            response = client.post(decision_url(approval.pk), {"approved": index % 2 == 0}, format="json")
            results[index] = (response.status_code, response.json())
        except Exception as exc:  # reported by the assertions below, with the thread it came from
            results[index] = (None, repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=decide, args=(i,)) for i in range(DECIDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(str(status) for status, _ in results) == ["200"] + ["409"] * (DECIDERS - 1), results
    [winner] = [body for status, body in results if status == 200]
    losers = [body for status, body in results if status == 409]
    assert {(body["code"], body["decided_by"], body["status"]) for body in losers} == {
        ("already_decided", winner["decided_by"], winner["status"])
    }
    approval.refresh_from_db()
    assert approval.decided_by.username == winner["decided_by"]
    assert ApprovalEvent.objects.filter(approval=approval, kind=ApprovalEvent.Kind.DECIDED).count() == 1


def test_respond_gives_the_model_the_reviewers_words_instead_of_the_tool(reviewer_api):
    approval = ApprovalFactory()

    response = reviewer_api.post(
        decision_url(approval.pk), {"action": "respond", "response": "Already refunded by phone."}, format="json"
    )

    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["action"], body["response"]) == ("rejected", "respond", "Already refunded by phone.")


def test_terminate_stops_the_run_and_cancels_its_other_pending_approvals(reviewer_api):
    approval = ApprovalFactory(run_id="run-7", call_id="c1")
    other = ApprovalFactory(run_id="run-7", call_id="c2")
    elsewhere = ApprovalFactory(run_id="run-8", call_id="c1")

    response = reviewer_api.post(
        decision_url(approval.pk), {"action": "terminate", "reason": "Looks like fraud."}, format="json"
    )

    assert response.status_code == 200
    assert (response.json()["status"], response.json()["action"]) == ("rejected", "terminate")
    other.refresh_from_db()
    elsewhere.refresh_from_db()
    assert other.status == Approval.Status.CANCELLED
    assert "rita stopped the whole run" in other.decision_reason
    assert elsewhere.status == Approval.Status.PENDING
