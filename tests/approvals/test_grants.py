"""Standing grants: given with an approval, used by the customer's later matching calls without
review, within their uses, total and time; revocable; never the grantor's own; race-safe."""

from __future__ import annotations

import itertools
import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connections
from django.utils import timezone

from anvia import Agent, create_tool
from anvia import Approval as ToolApproval
from anvia.testing import ScriptedModel, call
from approvals.errors import InvalidDecision, TooManyPendingApprovals
from approvals.grants import GrantTerms, grant_revoke, grant_use
from approvals.hooks import approval_hook
from approvals.models import Approval, ApprovalEvent, Grant
from approvals.services import ApprovalRequest, approval_decide, approval_request, approval_wait
from tests.anvia.tools_fixtures import RefundInput
from tests.factories import ApprovalFactory, ReviewerFactory, UserFactory

pytestmark = pytest.mark.django_db

_calls = itertools.count(1)


def refund_approval(customer, **overrides) -> Approval:
    """A pending refund approval of ``customer``'s, as the support tool asks for it."""
    values = {
        "requested_by": customer,
        "args": {"order_id": "A-1001", "amount": 150.0},
        "grant_amount_arg": "amount",
        "grant_scope": ["order_id"],
        "tool_fingerprint": "tool-v1",
    }
    return ApprovalFactory(**{**values, **overrides})


def refund_request(customer, **overrides) -> ApprovalRequest:
    n = next(_calls)
    values = {
        "run_id": f"run-{n}",
        "call_id": f"call_{n}",
        "tool_name": "refund_order",
        "args": {"order_id": "A-1001", "amount": 40.0},
        "reason": "Review refund of $40.00 for A-1001.",
        "requested_by_id": customer.pk,
        "tool_fingerprint": "tool-v1",
        "grant_amount_arg": "amount",
        "grant_scope": ("order_id",),
    }
    return ApprovalRequest(**{**values, **overrides})


def grant_on(approval: Approval, reviewer, **terms) -> Grant:
    terms = {"hours": 24, "uses": 3, "max_total": 200, "match_args": ["order_id"], **terms}
    approval_decide(approval_id=approval.pk, reviewer=reviewer, action="approve", reason="ok", grant=terms)
    return Grant.objects.get(from_approval=approval)


@pytest.fixture
def customer():
    return UserFactory(username="alice")


@pytest.fixture
def granted(customer, reviewer) -> Grant:
    return grant_on(refund_approval(customer), reviewer)


# ---- giving ----------------------------------------------------------------------------------


def test_approving_with_a_grant_records_its_terms_for_the_requester(customer, reviewer):
    approval = refund_approval(customer)
    grant = grant_on(approval, reviewer, hours=12)
    assert grant.customer == customer
    assert grant.granted_by == reviewer
    assert grant.tool_name == "refund_order"
    assert grant.match_args == {"order_id": "A-1001"}
    assert (grant.max_total, grant.max_uses, grant.used_count, grant.used_total) == (Decimal("200"), 3, 0, 0)
    assert grant.amount_arg == "amount"
    assert grant.tool_fingerprint == "tool-v1"
    assert timedelta(hours=11, minutes=59) < grant.expires_at - timezone.now() <= timedelta(hours=12)
    approval.refresh_from_db()
    assert approval.status == Approval.Status.APPROVED
    granted = approval.events.get(kind=ApprovalEvent.Kind.GRANTED)
    assert granted.actor == reviewer
    assert granted.data == {
        "grant": grant.pk,
        "hours": 12,
        "uses": 3,
        "max_total": "200",
        "match_args": {"order_id": "A-1001"},
    }


def test_a_grant_limited_to_an_edited_argument_matches_the_approved_value(customer, reviewer):
    approval = refund_approval(customer)
    approval_decide(
        approval_id=approval.pk,
        reviewer=reviewer,
        action="approve",
        edited_args={"order_id": "A-1004", "amount": 100.0},
        grant=GrantTerms(hours=1, uses=1, max_total=Decimal("50"), match_args=("order_id",)),
    )
    assert Grant.objects.get().match_args == {"order_id": "A-1004"}


@pytest.mark.parametrize(
    ("terms", "overrides", "field"),
    [
        ({"hours": 0}, {}, "grant.hours"),
        ({"hours": 721}, {}, "grant.hours"),
        ({"hours": "soon"}, {}, "grant.hours"),
        ({"hours": None}, {}, "grant.hours"),
        ({"uses": 0}, {}, "grant.uses"),
        ({"uses": 101}, {}, "grant.uses"),
        ({"max_total": None}, {}, "grant.max_total"),
        ({"max_total": "-5"}, {}, "grant.max_total"),
        ({"max_total": "1.001"}, {}, "grant.max_total"),
        ({"max_total": 5}, {"grant_amount_arg": ""}, "grant.max_total"),
        ({"match_args": ["amount"]}, {}, "grant.match_args"),
        ({"match_args": "order_id"}, {}, "grant.match_args"),
        ({}, {"quorum": 2}, "grant"),
        ({}, {"requested_by": None}, "grant"),
    ],
)
def test_a_grant_that_cannot_be_given_refuses_the_decision_naming_the_field(
    customer, reviewer, terms, overrides, field
):
    approval = refund_approval(customer, **overrides)
    body = {"hours": 24, "uses": 3, "max_total": 200, "match_args": ["order_id"], **terms}
    with pytest.raises(InvalidDecision) as refused:
        approval_decide(approval_id=approval.pk, reviewer=reviewer, action="approve", grant=body)
    assert list(refused.value.fields) == [field]
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING  # nothing decided, nothing granted
    assert not Grant.objects.exists()


def test_a_grant_only_goes_with_an_approval(customer, reviewer):
    approval = refund_approval(customer)
    with pytest.raises(InvalidDecision) as refused:
        approval_decide(
            approval_id=approval.pk, reviewer=reviewer, action="reject", grant={"hours": 1, "uses": 1, "max_total": 1}
        )
    assert list(refused.value.fields) == ["grant"]


# ---- using -----------------------------------------------------------------------------------


def test_a_later_matching_call_runs_without_review_approved_by_the_grant(customer, reviewer, granted):
    approval, created = approval_request(request=refund_request(customer))
    assert created
    assert approval.status == Approval.Status.APPROVED
    assert approval.grant == granted
    assert approval.decided_by is None  # nobody looked at this call: the grant approved it
    assert approval.approvers == []
    assert approval.decision_reason == f"approved by grant #{granted.pk} from rita"
    assert approval.decided_at is not None
    decided = approval.events.get(kind=ApprovalEvent.Kind.DECIDED)
    assert decided.data["grant"] == granted.pk
    assert decided.actor is None
    # The run's wait returns at once with an approval to run the call.
    decision = approval_wait(approval_id=approval.pk, timeout=0)
    assert decision.approved
    assert decision.reason == f"approved by grant #{granted.pk} from rita"
    granted.refresh_from_db()
    assert (granted.used_count, granted.used_total) == (1, Decimal("40.00"))


def test_uses_run_out(customer, granted):
    one_dollar = {"order_id": "A-1001", "amount": 1}
    statuses = [approval_request(request=refund_request(customer, args=one_dollar))[0].status for _ in range(4)]
    assert statuses == ["approved", "approved", "approved", "pending"]


def test_the_total_runs_out_and_a_call_over_what_is_left_waits_for_review(customer, granted):
    first, _ = approval_request(request=refund_request(customer, args={"order_id": "A-1001", "amount": 150.0}))
    over, _ = approval_request(request=refund_request(customer, args={"order_id": "A-1001", "amount": 50.01}))
    exact, _ = approval_request(request=refund_request(customer, args={"order_id": "A-1001", "amount": 50}))
    assert (first.status, over.status, exact.status) == ("approved", "pending", "approved")
    granted.refresh_from_db()
    assert (granted.used_count, granted.used_total) == (2, Decimal("200.00"))


def test_cents_add_up_exactly(customer, reviewer):
    grant = grant_on(refund_approval(customer), reviewer, max_total="0.30", uses=3)
    for amount in (0.1, 0.2):
        request = refund_request(customer, args={"order_id": "A-1001", "amount": amount})
        assert approval_request(request=request)[0].status == "approved"
    grant.refresh_from_db()
    assert grant.used_total == Decimal("0.30")


@pytest.mark.parametrize(
    "args",
    [
        {"order_id": "A-1001", "amount": "forty"},
        {"order_id": "A-1001", "amount": -5},
        {"order_id": "A-1001", "amount": 10.001},
        {"order_id": "A-1001", "amount": 1e300},
        {"order_id": "A-1001", "amount": "NaN"},
        {"order_id": "A-1001"},
    ],
)
def test_a_call_without_a_plain_amount_is_not_covered(customer, granted, args):
    assert approval_request(request=refund_request(customer, args=args))[0].status == "pending"


def test_an_expired_grant_covers_nothing(customer, granted):
    Grant.objects.filter(pk=granted.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert approval_request(request=refund_request(customer))[0].status == "pending"


def test_a_revoked_grant_covers_nothing(customer, reviewer, granted):
    other = ReviewerFactory(username="vic")
    grant, changed = grant_revoke(grant_id=granted.pk, user=other)
    assert (changed, grant.revoked_by, grant.revoked_at is not None) == (True, other, True)
    again, changed_again = grant_revoke(grant_id=granted.pk, user=reviewer)
    assert (changed_again, again.revoked_by) == (False, other)
    assert approval_request(request=refund_request(customer))[0].status == "pending"


def test_another_customer_another_order_another_tool_are_not_covered(customer, granted):
    bob = UserFactory(username="bob")
    assert approval_request(request=refund_request(bob))[0].status == "pending"
    other_order = refund_request(customer, args={"order_id": "A-1004", "amount": 40.0})
    assert approval_request(request=other_order)[0].status == "pending"
    assert approval_request(request=refund_request(customer, tool_name="cancel_order"))[0].status == "pending"
    assert approval_request(request=refund_request(customer))[0].status == "approved"


def test_a_grant_not_limited_to_an_order_covers_the_customers_other_orders(customer, reviewer):
    grant_on(refund_approval(customer), reviewer, match_args=[])
    other_order = refund_request(customer, args={"order_id": "A-1004", "amount": 40.0})
    assert approval_request(request=other_order)[0].status == "approved"


def test_a_changed_tool_is_not_covered(customer, granted):
    assert approval_request(request=refund_request(customer, tool_fingerprint="tool-v2"))[0].status == "pending"


def test_a_call_needing_two_reviewers_is_not_covered(customer, granted):
    assert approval_request(request=refund_request(customer, quorum=2))[0].status == "pending"
    granted.refresh_from_db()
    assert granted.used_count == 0


def test_the_grantors_own_requests_are_never_covered(reviewer):
    """Giving one to yourself is impossible (you cannot decide your own request); even a row that
    says so (made out to its grantor) never covers the grantor's calls."""
    colleague = ReviewerFactory(username="vic")
    grant = grant_on(refund_approval(colleague), reviewer)
    # The grant's customer is vic; make rita the customer too, as a forged row would.
    Grant.objects.filter(pk=grant.pk).update(customer=reviewer)
    assert approval_request(request=refund_request(reviewer))[0].status == "pending"
    assert grant_use(request=refund_request(reviewer), args={"order_id": "A-1001", "amount": 40.0}) is None


def test_a_request_found_again_is_not_counted_twice(customer, granted):
    request = refund_request(customer)
    first, created = approval_request(request=request)
    again, created_again = approval_request(request=request)
    assert (created, created_again, again.pk) == (True, False, first.pk)
    granted.refresh_from_db()
    assert granted.used_count == 1


def test_a_customer_at_the_pending_limit_still_gets_a_covered_call(customer, granted, settings):
    settings.ANVIA_APPROVAL_MAX_PENDING_PER_USER = 1
    ApprovalFactory(requested_by=customer)
    assert approval_request(request=refund_request(customer))[0].status == "approved"
    with pytest.raises(TooManyPendingApprovals):
        approval_request(request=refund_request(customer, args={"order_id": "A-1004", "amount": 40.0}))


# ---- racing ----------------------------------------------------------------------------------
# On PostgreSQL these prove the conditional UPDATE (two runs read the same grant, one UPDATE
# wins); on SQLite, where every write transaction is IMMEDIATE, runs are serialized anyway.


def race(requests: list[ApprovalRequest]) -> list[str]:
    """Every request at once, each in its own thread and database connection; their statuses."""
    barrier = threading.Barrier(len(requests))
    statuses: list[str] = [""] * len(requests)
    errors: list[BaseException] = []

    def run(index: int, request: ApprovalRequest) -> None:
        try:
            barrier.wait(timeout=10)
            statuses[index] = approval_request(request=request)[0].status
        except BaseException as error:
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i, r)) for i, r in enumerate(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    return statuses


@pytest.mark.django_db(transaction=True)
def test_runs_racing_for_the_last_use_never_exceed_the_uses():
    customer = UserFactory(username="alice")
    reviewer = ReviewerFactory(username="rita")
    for _ in range(20):
        grant = grant_on(refund_approval(customer), reviewer, uses=1, max_total=1000)
        statuses = race([refund_request(customer, args={"order_id": "A-1001", "amount": 5}) for _ in range(2)])
        assert sorted(statuses) == ["approved", "pending"]
        grant.refresh_from_db()
        assert (grant.used_count, grant.used_total) == (1, Decimal("5.00"))
        assert Approval.objects.filter(grant=grant).count() == 1
        Grant.objects.filter(pk=grant.pk).update(revoked_at=timezone.now())
        Approval.objects.filter(status=Approval.Status.PENDING).update(status=Approval.Status.CANCELLED)


@pytest.mark.django_db(transaction=True)
def test_runs_racing_for_the_last_dollars_never_exceed_the_total():
    customer = UserFactory(username="alice")
    reviewer = ReviewerFactory(username="rita")
    for _ in range(20):
        grant = grant_on(refund_approval(customer), reviewer, uses=10, max_total="100.00")
        requests = [refund_request(customer, args={"order_id": "A-1001", "amount": 30.0}) for _ in range(4)]
        statuses = race(requests)
        assert sorted(statuses) == ["approved", "approved", "approved", "pending"]
        grant.refresh_from_db()
        assert (grant.used_count, grant.used_total) == (3, Decimal("90.00"))
        Grant.objects.filter(pk=grant.pk).update(revoked_at=timezone.now())
        Approval.objects.filter(status=Approval.Status.PENDING).update(status=Approval.Status.CANCELLED)


# ---- the API ---------------------------------------------------------------------------------


def decide(api, approval: Approval, body: dict):
    return api.post(f"/api/approvals/{approval.pk}/decision/", body, format="json")


def test_the_api_approves_with_a_grant_and_the_next_call_says_approved_by_it(customer, reviewer_api):
    approval = refund_approval(customer)
    body = {"approved": True, "grant": {"max_total": 200, "hours": 24, "uses": 3, "match_args": ["order_id"]}}
    response = decide(reviewer_api, approval, body)
    assert response.status_code == 200, response.json()
    assert [e["kind"] for e in response.json()["events"]][-1] == "granted"
    grant = Grant.objects.get()

    later, _ = approval_request(request=refund_request(customer))
    shown = reviewer_api.get(f"/api/approvals/{later.pk}/").json()
    assert shown["status"] == "approved"
    assert shown["grant"] == grant.pk
    assert shown["approved_by_grant"] == f"approved by grant #{grant.pk} from rita"
    assert (shown["decided_by"], shown["approvals"]) == (None, [])
    assert reviewer_api.get(f"/api/approvals/{approval.pk}/").json()["approved_by_grant"] == ""


@pytest.mark.parametrize(
    ("grant", "overrides", "errors"),
    [
        (
            {"hours": 0, "uses": 1, "max_total": 5},
            {},
            {"grant": {"hours": ["Ensure this value is greater than or equal to 1."]}},
        ),
        (
            {"hours": 1, "uses": 101, "max_total": 5},
            {},
            {"grant": {"uses": ["Ensure this value is less than or equal to 100."]}},
        ),
        ({"uses": 1, "max_total": 5}, {}, {"grant": {"hours": ["This field is required."]}}),
        ({"hours": 1, "uses": 1, "max_total": "lots"}, {}, {"grant": {"max_total": ["A valid number is required."]}}),
        (
            {"hours": 1, "uses": 1},
            {},
            {
                "grant": {
                    "max_total": [
                        "Give the most the grant may cover in total: the amount of each call counts against it."
                    ]
                }
            },
        ),
        (
            {"hours": 1, "uses": 1, "max_total": 5},
            {"grant_amount_arg": ""},
            {"grant": {"max_total": ["This tool counts no amount: leave max_total out."]}},
        ),
        (
            {"hours": 1, "uses": 1, "max_total": 5, "match_args": ["amount"]},
            {},
            {"grant": {"match_args": ["amount cannot limit a grant of this tool (it may be: order_id)."]}},
        ),
        (
            {"hours": 1, "uses": 1, "max_total": 5},
            {"quorum": 2},
            {"grant": ["This call needs 2 reviewers: a standing grant would bypass that rule."]},
        ),
        ("all of it", {}, {"grant": {"non_field_errors": ["Invalid data. Expected a dictionary, but got str."]}}),
    ],
)
def test_the_api_answers_400_naming_the_grants_field(customer, reviewer_api, grant, overrides, errors):
    approval = refund_approval(customer, **overrides)
    response = decide(reviewer_api, approval, {"approved": True, "grant": grant})
    assert response.status_code == 400
    assert response.json() == errors
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING
    assert not Grant.objects.exists()


def test_a_grant_with_a_rejection_is_400(customer, reviewer_api):
    response = decide(reviewer_api, refund_approval(customer), {"action": "reject", "grant": {"hours": 1, "uses": 1}})
    assert response.status_code == 400
    assert response.json() == {"grant": ["A grant can only be given together with an approval."]}


def test_grants_are_listed_and_filtered_for_reviewers_only(customer, reviewer, reviewer_api, alice_api):
    bob = UserFactory(username="bob")
    mine = grant_on(refund_approval(customer), reviewer)
    bobs = grant_on(refund_approval(bob, args={"order_id": "B-2001", "amount": 10.0}), reviewer)
    gone = grant_on(refund_approval(customer, args={"order_id": "A-1004", "amount": 10.0}), reviewer)
    grant_revoke(grant_id=gone.pk, user=reviewer)

    def ids(query: str = "") -> list[int]:
        response = reviewer_api.get(f"/api/grants/{query}")
        assert response.status_code == 200, response.json()
        return [row["id"] for row in response.json()["results"]]

    assert ids() == [gone.pk, bobs.pk, mine.pk]
    assert ids("?active=true") == [bobs.pk, mine.pk]
    assert ids("?active=false") == [gone.pk]
    assert ids("?customer=bob") == [bobs.pk]
    assert ids("?tool=cancel_order") == []
    assert ids("?q=B-2001") == [bobs.pk]
    assert ids(f"?q=%23{mine.pk}") == [mine.pk]
    row = reviewer_api.get(f"/api/grants/{mine.pk}/").json()
    assert row == {
        **row,
        "state": "active",
        "customer": "alice",
        "granted_by": "rita",
        "match_args": {"order_id": "A-1001"},
        "max_total": "200.00",
        "total_left": "200.00",
        "uses_left": 3,
        "from_approval": mine.from_approval_id,
        "revoked_by": None,
    }
    assert reviewer_api.get("/api/grants/?active=maybe").status_code == 400
    assert alice_api.get("/api/grants/").status_code == 403
    assert alice_api.delete(f"/api/grants/{mine.pk}/").status_code == 403
    assert reviewer_api.get("/api/grants/999999/").status_code == 404


def test_delete_revokes_and_the_grant_covers_nothing_more(customer, reviewer, reviewer_api):
    grant = grant_on(refund_approval(customer), reviewer)
    assert reviewer_api.delete(f"/api/grants/{grant.pk}/").status_code == 204
    assert reviewer_api.delete(f"/api/grants/{grant.pk}/").status_code == 204  # idempotent
    assert reviewer_api.delete("/api/grants/999999/").status_code == 404
    shown = reviewer_api.get(f"/api/grants/{grant.pk}/").json()
    assert (shown["state"], shown["revoked_by"]) == ("revoked", "rita")
    assert approval_request(request=refund_request(customer))[0].status == "pending"


# ---- the review pages ------------------------------------------------------------------------

GRANT_POST = {
    "decision": "approve",
    "reason": "",
    "grant": "on",
    "grant_hours": "24",
    "grant_uses": "3",
    "grant_max_total": "200",
    "grant_match": ["order_id"],
}


def test_the_decision_page_offers_a_grant_only_where_one_may_be_given(customer, reviewer_client):
    page = reviewer_client.get(f"/review/{refund_approval(customer).pk}/").content.decode()
    assert "Also grant…" in page
    assert 'name="grant_match" value="order_id" checked' in page
    two_person = reviewer_client.get(f"/review/{refund_approval(customer, quorum=2).pk}/").content.decode()
    assert "Also grant…" not in two_person


def test_approving_with_a_grant_on_the_page_then_the_next_call_shows_approved_by_grant(customer, reviewer_client):
    approval = refund_approval(customer)
    response = reviewer_client.post(f"/review/{approval.pk}/", GRANT_POST, follow=True)
    grant = Grant.objects.get()
    assert f"Approved #{approval.pk} refund_order. Granted #{grant.pk} to alice." in response.content.decode()
    assert (grant.max_uses, grant.max_total, grant.match_args) == (3, Decimal("200"), {"order_id": "A-1001"})

    later, _ = approval_request(request=refund_request(customer))
    page = reviewer_client.get(f"/review/{later.pk}/").content.decode()
    assert f'Approved by <a href="/review/grants/?q=%23{grant.pk}">grant #{grant.pk}</a> from rita' in page
    given = reviewer_client.get(f"/review/{approval.pk}/").content.decode()
    assert f'gave <a href="/review/grants/?q=%23{grant.pk}">grant #{grant.pk}</a> with this approval' in given


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"grant_hours": "0"}, "Must be from 1 to 720 hours."),
        ({"grant_uses": "many"}, "Uses must be a whole number."),
        (
            {"grant_max_total": ""},
            "Give the most the grant may cover in total: the amount of each call counts against it.",
        ),
        ({"grant_match": ["amount"]}, "Select a valid choice. amount is not one of the available choices."),
    ],
)
def test_a_grant_the_page_cannot_give_is_explained_and_nothing_is_decided(customer, reviewer_client, change, says):
    approval = refund_approval(customer)
    response = reviewer_client.post(f"/review/{approval.pk}/", {**GRANT_POST, **change})
    assert response.status_code == 400
    assert says in response.content.decode()
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING
    assert not Grant.objects.exists()


def test_the_grants_page_lists_searches_and_revokes(customer, reviewer, reviewer_client):
    grant = grant_on(refund_approval(customer, args={"order_id": "<b>A-1</b>", "amount": 5.0}), reviewer)
    page = reviewer_client.get("/review/grants/").content.decode()
    assert f'id="grant-{grant.pk}"' in page
    assert "&lt;b&gt;A-1&lt;/b&gt;" in page  # the model's words, escaped
    assert "<b>A-1</b>" not in page
    assert "3 of 3" in page
    assert "$200.00 of $200.00" in page
    assert f'id="grant-{grant.pk}"' not in reviewer_client.get("/review/grants/?q=nobody").content.decode()
    assert f'id="grant-{grant.pk}"' in reviewer_client.get("/review/grants/?state=active").content.decode()

    response = reviewer_client.post(f"/review/grants/{grant.pk}/revoke/", follow=True)
    assert f"Revoked grant #{grant.pk}: it covers no more calls." in response.content.decode()
    grant.refresh_from_db()
    assert grant.revoked_by == reviewer
    assert f'id="grant-{grant.pk}"' in reviewer_client.get("/review/grants/?state=revoked").content.decode()


def test_the_grants_page_is_for_reviewers_only(customer, reviewer, client):
    grant = grant_on(refund_approval(customer), reviewer)
    client.force_login(customer)
    assert client.get("/review/grants/").status_code == 403
    assert client.post(f"/review/grants/{grant.pk}/revoke/").status_code == 403
    grant.refresh_from_db()
    assert grant.revoked_at is None


# ---- the admin -------------------------------------------------------------------------------


def test_the_admin_lists_searches_filters_and_revokes_grants(customer, reviewer, reviewer_client):
    grant = grant_on(refund_approval(customer), reviewer)
    listing = reviewer_client.get("/admin/approvals/grant/?q=alice&state=active").content.decode()
    assert f'href="/admin/approvals/grant/{grant.pk}/change/' in listing
    assert "3 of 3" in listing
    assert (
        f"/admin/approvals/grant/{grant.pk}/change/"
        not in reviewer_client.get("/admin/approvals/grant/?state=revoked").content.decode()
    )
    assert reviewer_client.get(f"/admin/approvals/grant/{grant.pk}/change/").status_code == 200
    covered, _ = approval_request(request=refund_request(customer))
    record = reviewer_client.get(f"/admin/approvals/approval/{covered.pk}/change/").content.decode()
    assert f'href="/admin/approvals/grant/{grant.pk}/change/"' in record
    assert f"approved by grant #{grant.pk} from rita" in record
    response = reviewer_client.post(
        "/admin/approvals/grant/", {"action": "revoke_selected", "_selected_action": [grant.pk]}, follow=True
    )
    assert "Revoked 1 grant." in response.content.decode()
    grant.refresh_from_db()
    assert grant.revoked_by == reviewer
    # Records, not forms: usage and terms are never edited by hand.
    assert reviewer_client.post(f"/admin/approvals/grant/{grant.pk}/change/", {"used_count": 0}).status_code == 403
    assert reviewer_client.get("/admin/approvals/grant/add/").status_code == 403


# ---- through the approval hook: a real agent run -------------------------------------------


def granting_refund_tool(executed: list):
    def refund(args: RefundInput, ctx):
        executed.append((args.order_id, args.amount))
        return {"order_id": args.order_id, "amount": args.amount, "refund_id": f"R-{len(executed)}"}

    return create_tool(
        name="refund_order",
        description="Issue a refund.",
        input=RefundInput,
        approval=ToolApproval(
            when=lambda call: call.args.amount > 10,
            reason=lambda call: f"Review refund of ${call.args.amount:g} for {call.args.order_id}.",
            reject_message="Refund was not approved.",
            grant_amount="amount",
            grant_scope=("order_id",),
        ),
        execute=refund,
    )


def run_refund(customer, executed, *, amount: float, events: list | None = None):
    model = ScriptedModel([call("refund_order", order_id="A-1001", amount=amount), "Refunded."])
    agent = Agent(name="support", instructions="Help.", model=model, tools=[granting_refund_tool(executed)])
    request = agent.prompt("refund").request_hook(approval_hook(user=customer, block_seconds=10))
    return request.on_event(events.append if events is not None else lambda event: None).send_sync()


@pytest.mark.django_db(transaction=True)
def test_a_run_whose_call_a_grant_covers_runs_it_without_waiting(decision_waiters):
    customer = UserFactory(username="alice")
    reviewer = ReviewerFactory(username="rita")
    executed: list = []

    def review():
        try:
            approval_decide(
                approval_id=decision_waiters.first(timeout=10),
                reviewer=reviewer,
                approved=True,
                grant={"hours": 1, "uses": 1, "max_total": "100", "match_args": ["order_id"]},
            )
        finally:
            connections.close_all()

    thread = threading.Thread(target=review)
    thread.start()
    assert run_refund(customer, executed, amount=150).text == "Refunded."
    thread.join(10)
    grant = Grant.objects.get()
    assert grant.tool_fingerprint  # the tool's real fingerprint, from the hook's request

    waits_before = len(decision_waiters.approval_ids)
    events: list = []
    covered_run = run_refund(customer, executed, amount=60, events=events)
    assert covered_run.text == "Refunded."
    assert executed == [("A-1001", 150), ("A-1001", 60)]
    # Nobody was asked, so nobody (the customer's timeline included) hears that someone is.
    assert covered_run.tool_calls[0].requires_approval is True
    assert "approval_requested" not in [event.type for event in events]
    decided = next(event for event in events if event.type == "approval_decided")
    assert decided.data["without_review"] == f"approved by grant #{grant.pk} from rita"
    assert len(decision_waiters.approval_ids) == waits_before  # nobody waited for a reviewer
    covered = Approval.objects.get(grant=grant)
    assert covered.decision_reason == f"approved by grant #{grant.pk} from rita"

    grant.refresh_from_db()
    assert (grant.used_count, grant.used_total) == (1, Decimal("60.00"))


@pytest.mark.parametrize(
    "grant",
    [
        {"hours": 10**40, "uses": 1, "max_total": 5},
        {"hours": 1, "uses": 1, "max_total": "1e999"},
        {"hours": 1, "uses": 1, "max_total": "NaN"},
        {"hours": 1, "uses": 1, "max_total": 5, "match_args": ["order_id"] * 50},
        {"hours": 1, "uses": 1, "max_total": 5, "match_args": [{"x": 1}]},
        {"hours": True, "uses": [], "max_total": {}},
    ],
)
def test_odd_grant_bodies_answer_400_never_500(customer, reviewer_api, grant):
    response = decide(reviewer_api, refund_approval(customer), {"approved": True, "grant": grant})
    assert response.status_code == 400
    assert set(response.json()) == {"grant"}


def test_odd_grant_forms_answer_400_never_500(customer, reviewer_client):
    for change in ({"grant_hours": "9" * 40}, {"grant_max_total": "1e999"}, {"grant_max_total": "Infinity"}):
        response = reviewer_client.post(f"/review/{refund_approval(customer).pk}/", {**GRANT_POST, **change})
        assert response.status_code == 400, change
    assert not Grant.objects.exists()
