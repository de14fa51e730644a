"""The reviewer queue and approval page: who sees them, what they show, and deciding from them."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.html import escape

from approvals.models import Approval, ApprovalEvent
from approvals.services import approval_decide
from tests.factories import ApprovalEventFactory, ApprovalFactory, ReviewerFactory, UserFactory

pytestmark = pytest.mark.django_db

XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=1">'


# A schema the page cannot render as fields (an array argument): edited as JSON.
UNRENDERABLE_SCHEMA = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string"},
        "amount": {"type": "number", "exclusiveMinimum": 0},
        "lines": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["order_id", "amount"],
}


def json_edited_approval(**fields) -> Approval:
    return ApprovalFactory(input_schema=UNRENDERABLE_SCHEMA, **fields)


def detail_url(approval: Approval) -> str:
    return f"/review/{approval.pk}/"


def decide(client, approval: Approval, decision: str = "approve", **fields):
    return client.post(detail_url(approval), {"decision": decision, "reason": "", **fields})


def text(response) -> str:
    return response.content.decode()


def test_anonymous_visitors_are_sent_to_log_in(client):
    approval = ApprovalFactory()
    for url in ("/review/", detail_url(approval), "/review/pending.json"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"] == f"/accounts/login/?next={url}"


@pytest.mark.parametrize(
    "make_user",
    [
        pytest.param(lambda: UserFactory(), id="customer"),
        pytest.param(lambda: ReviewerFactory(can_decide=False), id="staff-without-permission"),
        pytest.param(lambda: ReviewerFactory(is_staff=False), id="not-staff-with-permission"),
    ],
)
def test_people_who_cannot_decide_get_403_saying_why(client, make_user):
    approval = ApprovalFactory()
    client.force_login(make_user())
    for response in (
        client.get("/review/"),
        client.get("/review/pending.json"),
        client.get(detail_url(approval)),
        decide(client, approval),
    ):
        assert response.status_code == 403
        assert "Can approve or reject tool calls" in text(response)
    assert Approval.objects.get(pk=approval.pk).is_pending


def test_queue_lists_pending_approvals_oldest_first(reviewer_client):
    now = timezone.now()
    newer = ApprovalFactory(tool_name="delete_account", requested_by=UserFactory(username="dave"))
    older = ApprovalFactory(reason="Review refund of $150.0 for A-1001.", requested_by=UserFactory(username="carol"))
    Approval.objects.filter(pk=older.pk).update(created_at=now - timedelta(hours=3))
    Approval.objects.filter(pk=newer.pk).update(created_at=now - timedelta(minutes=5))
    ApprovalFactory(tool_name="decided_tool", status=Approval.Status.APPROVED)

    response = reviewer_client.get("/review/")

    assert response.status_code == 200
    assert [a.pk for a in response.context["approvals"]] == [older.pk, newer.pk]
    page = text(response)
    assert 'value="decided_tool">decided_tool</option>' in page  # in the tool filter only
    assert "<code>decided_tool</code>" not in page
    assert "Review refund of $150.0 for A-1001." in page
    assert "carol" in page
    assert "dave" in page
    assert "3\xa0hours" in page
    assert "5\xa0minutes" in page
    assert f'href="/review/{older.pk}/"' in page
    assert 'src="/static/js/review.js"' in page


def test_queue_shows_model_written_reasons_as_text(reviewer_client):
    ApprovalFactory(reason=XSS)
    page = text(reviewer_client.get("/review/"))
    assert "<script>window.__xss" not in page
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;&lt;img src=x onerror=&quot;window.__xss=1&quot;&gt;" in page


def test_queue_says_when_nothing_is_waiting(reviewer_client):
    page = text(reviewer_client.get("/review/"))
    assert "Nothing is waiting for a decision." in page
    assert 'id="queue-empty" class="empty">' in page


def test_pending_json_matches_what_the_socket_sends(reviewer_client):
    approval = ApprovalFactory(requested_by=UserFactory(username="carol"))
    ApprovalFactory(status=Approval.Status.REJECTED)
    data = reviewer_client.get("/review/pending.json").json()
    assert data["total"] == 1
    assert data["approvals"] == [
        {
            "id": approval.pk,
            "status": "pending",
            "tool_name": "refund_order",
            "reason": approval.reason,
            "requested_by": "carol",
            "created_at": approval.created_at.isoformat(),
            "decided_by": None,
            "decided_at": None,
            "decision_reason": "",
            "quorum": 1,
            "approvals": [],
            "outcome_text": "Pending",
            "mine": False,
            "amount": "$150",
            "customer": "carol",
        }
    ]


def test_detail_shows_the_request_and_a_decision_form(reviewer_client):
    approval = ApprovalFactory(
        args={"amount": 150.0, "order_id": "A-1001", "note": XSS},
        reason=f"Refund? {XSS}",
        conversation_excerpt=[
            {"role": "user", "content": f"Refund my order {XSS}"},
            {"role": "assistant", "content": "I will ask a person."},
        ],
        requested_by=UserFactory(username="carol"),
    )
    ApprovalEventFactory(approval=approval, kind=ApprovalEvent.Kind.REQUESTED, data={"run_id": "run-1"})

    response = reviewer_client.get(detail_url(approval))

    assert response.status_code == 200
    page = text(response)
    assert "<script>window.__xss" not in page
    assert "<img src=x" not in page
    assert "Refund? &lt;script&gt;window.__xss=1&lt;/script&gt;" in page
    assert "Refund my order &lt;script&gt;" in page
    assert "I will ask a person." in page
    pretty = json.dumps(approval.args, indent=2, sort_keys=True)
    assert f'<pre id="approval-args">{escape(pretty)}</pre>' in page
    assert "carol" in page
    assert "Requested" in page
    assert "run-1" in page
    assert 'name="csrfmiddlewaretoken"' in page
    assert '<label for="id_reason">Reason</label>' in page
    assert '<button type="submit" name="decision" value="approve"' in page
    assert '<button type="submit" name="decision" value="reject"' in page


def test_detail_has_no_form_for_the_requester(client, reviewer):
    approval = ApprovalFactory(requested_by=reviewer)
    client.force_login(reviewer)
    page = text(client.get(detail_url(approval)))
    assert 'name="decision"' not in page
    assert "You asked for this action, so someone else must decide it." in page


def test_detail_of_a_decided_approval_shows_who_decided_and_no_form(reviewer_client):
    approval = ApprovalFactory()
    approval_decide(approval_id=approval.pk, reviewer=ReviewerFactory(username="bob"), approved=False, reason="No.")
    page = text(reviewer_client.get(detail_url(approval)))
    assert 'name="decision"' not in page
    assert "Rejected" in page
    assert "by bob" in page


def test_unknown_approval_is_404(reviewer_client):
    assert reviewer_client.get("/review/999999/").status_code == 404
    assert reviewer_client.post("/review/999999/", {"decision": "approve"}).status_code == 404


def test_approving_records_the_reviewer_and_returns_to_the_queue(reviewer_client, reviewer):
    approval = json_edited_approval()
    form = text(reviewer_client.get(detail_url(approval)))
    prefilled = json.dumps(approval.args, indent=2, sort_keys=True)
    assert prefilled.replace('"', "&quot;") in form

    response = decide(reviewer_client, approval, reason="  Within policy. ", edited_args=prefilled)

    assert response.status_code == 302
    assert response["Location"] == "/review/"
    approval.refresh_from_db()
    assert approval.status == Approval.Status.APPROVED
    assert approval.decided_by == reviewer
    assert approval.decision_reason == "Within policy."
    assert approval.edited_args is None
    queue = reviewer_client.get("/review/")
    assert f"Approved #{approval.pk} refund_order." in text(queue)
    assert approval not in queue.context["approvals"]


def test_rejecting_records_the_reason(reviewer_client, reviewer):
    approval = ApprovalFactory()
    response = decide(reviewer_client, approval, "reject", reason="Order already refunded.")
    assert response.status_code == 302
    approval.refresh_from_db()
    assert (approval.status, approval.decided_by, approval.decision_reason) == (
        Approval.Status.REJECTED,
        reviewer,
        "Order already refunded.",
    )
    assert f"Rejected #{approval.pk} refund_order." in text(reviewer_client.get("/review/"))


def test_edited_arguments_are_stored_and_run_instead(reviewer_client):
    approval = ApprovalFactory()
    response = decide(reviewer_client, approval, edited_args='{"order_id": "A-1001", "amount": 99.5}')
    assert response.status_code == 302
    approval.refresh_from_db()
    assert approval.status == Approval.Status.APPROVED
    assert approval.edited_args == {"amount": 99.5, "order_id": "A-1001"}
    assert approval.approved_args == {"amount": 99.5, "order_id": "A-1001"}
    assert "with edited arguments" in text(reviewer_client.get("/review/"))


def test_the_same_arguments_reformatted_are_not_an_edit(reviewer_client):
    approval = ApprovalFactory()
    decide(reviewer_client, approval, edited_args='{ "order_id":"A-1001",\n "amount":150.0 }')
    approval.refresh_from_db()
    assert approval.status == Approval.Status.APPROVED
    assert approval.edited_args is None


def test_edits_are_ignored_when_rejecting(reviewer_client):
    approval = ApprovalFactory()
    response = decide(reviewer_client, approval, "reject", edited_args="{not even json")
    assert response.status_code == 302
    approval.refresh_from_db()
    assert (approval.status, approval.edited_args) == (Approval.Status.REJECTED, None)


def test_invalid_edited_arguments_are_400_naming_the_field(reviewer_client):
    approval = json_edited_approval()
    response = decide(reviewer_client, approval, reason="ok", edited_args='{"order_id": "A-1001", "amount": -5}')
    assert response.status_code == 400
    page = text(response)
    assert "The edited arguments are not valid" in page
    assert "<code>args.amount</code>: Amount must be more than $0." in page
    # The form comes back as the reviewer left it.
    assert "&quot;amount&quot;: -5" in page
    assert ">ok</textarea>" in page
    assert Approval.objects.get(pk=approval.pk).is_pending


def test_a_missing_required_field_is_named(reviewer_client):
    approval = json_edited_approval()
    response = decide(reviewer_client, approval, edited_args='{"amount": 10}')
    assert response.status_code == 400
    assert "<code>args.order_id</code>" in text(response)


def test_edited_arguments_that_are_not_json_are_a_clear_400(reviewer_client):
    approval = json_edited_approval()
    response = decide(reviewer_client, approval, edited_args='{"amount": 10,}')
    assert response.status_code == 400
    page = text(response)
    assert "The edited arguments could not be read. Not valid JSON" in page
    assert "Expecting property name enclosed in double quotes (line 1, column 15)" in page
    assert 'aria-invalid="true"' in page
    assert Approval.objects.get(pk=approval.pk).is_pending


def test_nan_is_not_json(reviewer_client):
    approval = ApprovalFactory()
    response = decide(reviewer_client, approval, edited_args='{"order_id": "A-1001", "amount": NaN}')
    assert response.status_code == 400
    assert "Not valid JSON: NaN is not a JSON value." in text(response)
    assert Approval.objects.get(pk=approval.pk).is_pending


def test_an_emptied_edit_box_approves_the_call_as_requested(reviewer_client):
    approval = ApprovalFactory()
    assert decide(reviewer_client, approval, edited_args="  ").status_code == 302
    approval.refresh_from_db()
    assert (approval.status, approval.edited_args) == (Approval.Status.APPROVED, None)


def test_edited_arguments_must_be_an_object(reviewer_client):
    response = decide(reviewer_client, ApprovalFactory(), edited_args="[1, 2]")
    assert response.status_code == 400
    assert "must be a JSON object" in text(response)


def test_approving_your_own_request_is_refused_with_403(client, reviewer):
    approval = ApprovalFactory(requested_by=reviewer)
    client.force_login(reviewer)
    response = decide(client, approval, reason="Looks fine to me.")
    assert response.status_code == 403
    assert "You asked for this action, so someone else must decide it." in text(response)
    assert Approval.objects.get(pk=approval.pk).is_pending


def test_deciding_after_someone_else_is_409_naming_them(reviewer_client):
    approval = ApprovalFactory()
    approval_decide(approval_id=approval.pk, reviewer=ReviewerFactory(username="bob"), approved=True)
    decided_at = Approval.objects.get(pk=approval.pk).decided_at

    response = decide(reviewer_client, approval, "reject", reason="Too much.")

    assert response.status_code == 409
    page = text(response)
    assert f"already approved by bob at {decided_at:%Y-%m-%d %H:%M:%S} UTC" in page
    assert 'role="alert"' in page
    assert 'name="decision"' not in page
    approval.refresh_from_db()
    assert (approval.status, approval.decision_reason) == (Approval.Status.APPROVED, "")


def test_deciding_an_expired_approval_is_409(reviewer_client):
    approval = ApprovalFactory(expires_at=timezone.now() - timedelta(minutes=1))
    page = text(reviewer_client.get(detail_url(approval)))
    assert 'name="decision"' not in page
    assert "it can no longer be decided" in page

    response = decide(reviewer_client, approval)

    assert response.status_code == 409
    assert f"Approval #{approval.pk} expired at" in text(response)


def test_a_decision_needs_approve_or_reject(reviewer_client):
    approval = ApprovalFactory()
    response = reviewer_client.post(detail_url(approval), {"reason": "hm"})
    assert response.status_code == 400
    assert "Choose Approve, Reject, Respond or Stop the run." in text(response)
    assert Approval.objects.get(pk=approval.pk).is_pending


def test_posting_without_a_csrf_token_is_refused(reviewer):
    client = Client(enforce_csrf_checks=True)
    client.force_login(reviewer)
    approval = ApprovalFactory()
    assert decide(client, approval).status_code == 403
    assert Approval.objects.get(pk=approval.pk).is_pending


def test_the_pages_do_not_query_once_per_row(reviewer_client):
    def queries(url: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert reviewer_client.get(url).status_code == 200
        return len(captured)

    approval = ApprovalFactory()
    ApprovalEventFactory(approval=approval, kind=ApprovalEvent.Kind.REQUESTED, actor=UserFactory())
    few = {url: queries(url) for url in ("/review/", "/review/pending.json", detail_url(approval))}
    for _ in range(5):
        ApprovalFactory()
        ApprovalEventFactory(approval=approval, kind=ApprovalEvent.Kind.NOTIFIED, actor=UserFactory())
    assert {url: queries(url) for url in few} == few


def test_respond_needs_the_words_the_agent_receives(reviewer_client):
    approval = ApprovalFactory()

    response = reviewer_client.post(detail_url(approval), {"decision": "respond", "response": "  "})

    assert response.status_code == 400
    page = text(response)
    assert "Write what the model should receive instead of the tool&#x27;s result." in page
    assert 'id="id_response"' in page
    assert Approval.objects.get(pk=approval.pk).is_pending


def test_respond_and_stop_the_run_from_the_page(reviewer_client):
    answered, stopped = ApprovalFactory(run_id="r1", call_id="c1"), ApprovalFactory(run_id="r2", call_id="c1")
    other_call = ApprovalFactory(run_id="r2", call_id="c2")

    reviewer_client.post(detail_url(answered), {"decision": "respond", "response": "Refunded by phone (RF-77)."})
    reviewer_client.post(detail_url(stopped), {"decision": "terminate", "reason": "Fraud pattern."})

    answered.refresh_from_db()
    stopped.refresh_from_db()
    other_call.refresh_from_db()
    assert (answered.action, answered.response) == ("respond", "Refunded by phone (RF-77).")
    assert (stopped.action, stopped.decision_reason) == ("terminate", "Fraud pattern.")
    assert other_call.status == "cancelled"


def test_arguments_are_typed_fields_from_the_schema(reviewer_client):
    approval = ApprovalFactory(args={"order_id": "A-1001", "amount": 118.0})
    page = text(reviewer_client.get(detail_url(approval)))
    assert 'name="arg__amount" value="118"' in page
    assert 'type="number"' in page
    assert 'name="arg__order_id" value="A-1001"' in page
    assert "Must be more than $0." in page
    assert 'name="edited_args"' not in page


def test_a_typed_edit_is_approved_and_shown_proposed_to_approved(reviewer_client):
    approval = ApprovalFactory(args={"order_id": "A-1001", "amount": 118.0})
    response = decide(reviewer_client, approval, arg__order_id="A-1001", arg__amount="105")
    assert response.status_code == 302
    approval.refresh_from_db()
    assert approval.edited_args == {"order_id": "A-1001", "amount": 105.0}
    page = text(reviewer_client.get(detail_url(approval)))
    assert '<span class="arg-name">amount</span> <del>118</del> → <ins>105</ins>' in page


def test_a_typed_value_outside_the_schema_is_refused_beside_its_field(reviewer_client):
    approval = ApprovalFactory()
    response = decide(reviewer_client, approval, arg__order_id="A-1001", arg__amount="-5")
    assert response.status_code == 400
    page = text(response)
    assert '<p class="error" id="id_arg__amount-error">Amount must be more than $0.</p>' in page
    assert 'name="arg__amount" value="-5"' in page
    response = decide(reviewer_client, approval, arg__order_id="A-1001", arg__amount="lots")
    assert response.status_code == 400
    assert "Amount must be a number." in text(response)
    assert Approval.objects.get(pk=approval.pk).is_pending


def test_rejecting_over_edits_asks_first(reviewer_client):
    approval = ApprovalFactory(args={"order_id": "A-1001", "amount": 118.0})
    response = decide(reviewer_client, approval, "reject", arg__order_id="A-1001", arg__amount="105")
    assert response.status_code == 400
    page = text(response)
    assert "Rejecting drops your edits (amount 118 → 105)" in page
    assert 'name="drop_edits" value="on"' in page
    assert Approval.objects.get(pk=approval.pk).is_pending
    response = decide(reviewer_client, approval, "reject", arg__order_id="A-1001", arg__amount="105", drop_edits="on")
    assert response.status_code == 302
    assert Approval.objects.get(pk=approval.pk).status == Approval.Status.REJECTED


def test_after_a_decision_the_next_request_opens(reviewer_client, reviewer):
    first, second = ApprovalFactory(), ApprovalFactory()
    ApprovalFactory(requested_by=reviewer)  # the reviewer's own: never next
    response = decide(reviewer_client, first)
    assert response["Location"] == detail_url(second)
    assert decide(reviewer_client, second)["Location"] == "/review/"


def test_own_requests_are_set_apart(reviewer_client, reviewer):
    mine = ApprovalFactory(requested_by=reviewer)
    theirs = ApprovalFactory()
    response = reviewer_client.get("/review/")
    assert [row.approval for row in response.context["rows"]] == [theirs]
    assert [row.approval for row in response.context["mine"]] == [mine]
    assert "Your own requests" in text(response)


def test_bulk_decisions_report_each_failure(reviewer_client, reviewer):
    ok = ApprovalFactory()
    mine = ApprovalFactory(requested_by=reviewer)
    done = ApprovalFactory()
    approval_decide(approval_id=done.pk, reviewer=ReviewerFactory(username="bob"), approved=False)
    response = reviewer_client.post("/review/bulk/", {"decision": "approve", "ids": [ok.pk, mine.pk, done.pk]})
    assert response.status_code == 302
    page = text(reviewer_client.get("/review/"))
    assert f"Approved 1: #{ok.pk}." in page
    assert f"Approval #{mine.pk}: You asked for this action" in page
    assert f"Approval #{done.pk} was already rejected by bob" in page
    assert Approval.objects.get(pk=ok.pk).status == Approval.Status.APPROVED
    assert Approval.objects.get(pk=mine.pk).is_pending


def test_the_queue_shows_outcomes_when_filtered_by_status(reviewer_client):
    ApprovalFactory(
        status=Approval.Status.APPROVED,
        action=Approval.Action.APPROVE,
        outcome={"outcome": "error", "result": None, "message": "Order A-1001 has only $80.00 left to refund."},
    )
    page = text(reviewer_client.get("/review/?status=approved"))
    assert "Approved — failed: Order A-1001 has only $80.00 left to refund." in page
