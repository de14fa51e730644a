from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals.admin import STATUS_COLOURS
from approvals.models import Approval, ApprovalEvent
from approvals.services import approval_decide, approval_wait
from tests.factories import AdminFactory, ApprovalEventFactory, ApprovalFactory, ReviewerFactory, UserFactory

CHANGELIST = "/admin/approvals/approval/"
XSS_SCRIPT = "<script>alert(1)</script>"
XSS_IMG = "<img src=x onerror=alert(1)>"


def change_url(approval: Approval) -> str:
    return f"{CHANGELIST}{approval.pk}/change/"


def decide_url(approval: Approval) -> str:
    return f"{CHANGELIST}{approval.pk}/decide/"


def shown_messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def run_action(client, action: str, approvals, *, reason: str = ""):
    """Post the confirmation page's form: the selected rows, the action, and the reviewer's reason."""
    data = {"action": action, "_selected_action": [a.pk for a in approvals], "confirm": "yes", "reason": reason}
    return client.post(CHANGELIST, data, follow=True)


@pytest.mark.django_db
class TestChangelist:
    def test_shows_pending_requests_with_reason_requester_and_age(self, reviewer_client):
        approval = ApprovalFactory(requested_by=UserFactory(username="alice"), reason="Refund $150 for A-1001?")
        Approval.objects.filter(pk=approval.pk).update(created_at=timezone.now() - timedelta(minutes=5))

        page = reviewer_client.get(CHANGELIST)

        assert page.status_code == 200
        html = page.content.decode()
        assert "Refund $150 for A-1001?" in html
        assert "alice" in html
        assert "refund_order" in html
        assert "Pending" in html
        assert "5\xa0minutes" in html

    def test_filters_by_status(self, reviewer_client, reviewer):
        ApprovalFactory(reason="Still waiting for someone.")
        done = ApprovalFactory(reason="Already handled earlier.")
        approval_decide(approval_id=done.pk, reviewer=reviewer, approved=True)

        pending_only = reviewer_client.get(CHANGELIST, {"status__exact": "pending"}).content.decode()
        approved_only = reviewer_client.get(CHANGELIST, {"status__exact": "approved"}).content.decode()

        assert "Still waiting for someone." in pending_only
        assert "Already handled earlier." not in pending_only
        assert "Already handled earlier." in approved_only
        assert "rita" in approved_only

    def test_searches_by_run_id_and_requester(self, reviewer_client):
        ApprovalFactory(run_id="run-abc123", reason="The one to find.")
        ApprovalFactory(requested_by=UserFactory(username="zed"), reason="Asked by zed.")

        by_run = reviewer_client.get(CHANGELIST, {"q": "abc123"}).content.decode()
        by_user = reviewer_client.get(CHANGELIST, {"q": "zed"}).content.decode()

        assert "The one to find." in by_run
        assert "Asked by zed." not in by_run
        assert "Asked by zed." in by_user
        assert "The one to find." not in by_user

    def test_lists_newest_first(self, reviewer_client):
        old = ApprovalFactory(reason="Older request.")
        Approval.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=1))
        ApprovalFactory(reason="Newer request.")

        html = reviewer_client.get(CHANGELIST).content.decode()

        assert html.index("Newer request.") < html.index("Older request.")

    def test_query_count_does_not_grow_with_rows(self, reviewer_client, reviewer):
        def decided_batch(size: int) -> None:
            for approval in ApprovalFactory.create_batch(size):
                approval_decide(approval_id=approval.pk, reviewer=reviewer, approved=True)

        decided_batch(2)
        with CaptureQueriesContext(connection) as few:
            reviewer_client.get(CHANGELIST)
        decided_batch(8)
        with CaptureQueriesContext(connection) as many:
            reviewer_client.get(CHANGELIST)

        assert len(many) == len(few)


@pytest.mark.django_db
class TestWhoSeesWhat:
    def test_staff_without_approval_permissions_is_refused(self, client):
        client.force_login(UserFactory(is_staff=True))
        assert client.get(CHANGELIST).status_code == 403

    def test_non_staff_is_sent_to_log_in(self, client):
        client.force_login(UserFactory())
        response = client.get(CHANGELIST)
        assert response.status_code == 302
        assert "/admin/login/" in response["Location"]

    def test_viewer_without_decide_permission_sees_no_actions_or_buttons(self, client):
        viewer = UserFactory(is_staff=True)
        viewer.user_permissions.add(Permission.objects.get(codename="view_approval"))
        client.force_login(viewer)
        approval = ApprovalFactory()

        changelist = client.get(CHANGELIST)
        page = client.get(change_url(approval))
        refused = client.post(decide_url(approval), {"decision": "approve"}, follow=True)

        assert changelist.status_code == 200
        assert b"approve_selected" not in changelist.content
        assert page.status_code == 200
        assert b'value="approve"' not in page.content
        assert "needs a staff account with the “Can approve or reject tool calls” permission" in page.content.decode()
        assert any("needs a staff account with the “Can approve or reject" in m for m in shown_messages(refused))
        approval.refresh_from_db()
        assert approval.status == "pending"

    def test_reviewer_sees_the_actions(self, reviewer_client):
        ApprovalFactory()
        html = reviewer_client.get(CHANGELIST).content.decode()
        assert '<option value="approve_selected">Approve selected</option>' in html
        assert '<option value="reject_selected">Reject selected</option>' in html
        assert "delete_selected" not in html

    def test_nobody_can_add_an_approval_by_hand(self, admin_client):
        assert admin_client.get(f"{CHANGELIST}add/").status_code == 403


@pytest.mark.django_db
class TestBulkActions:
    def test_the_action_first_asks_for_confirmation_and_decides_nothing(self, reviewer_client):
        approvals = [ApprovalFactory(reason="First refund."), ApprovalFactory(reason="Second refund.")]

        page = reviewer_client.post(
            CHANGELIST, {"action": "approve_selected", "_selected_action": [a.pk for a in approvals], "index": "0"}
        )

        assert page.status_code == 200
        html = page.content.decode()
        assert "Approve 2 approvals?" in html
        assert "First refund." in html
        assert "Second refund." in html
        assert Approval.objects.filter(status="pending").count() == 2

    def test_approve_decides_many_at_once_attributed_to_the_reviewer(self, reviewer_client, reviewer):
        approvals = ApprovalFactory.create_batch(3)

        response = run_action(reviewer_client, "approve_selected", approvals)

        assert "Approved 3 approvals." in shown_messages(response)
        for approval in approvals:
            approval.refresh_from_db()
            assert approval.status == "approved"
            assert approval.decided_by == reviewer
            assert approval.decision_reason == "Approved in bulk from the admin"
            event = approval.events.get(kind=ApprovalEvent.Kind.DECIDED)
            assert event.actor == reviewer
            assert event.data["status"] == "approved"

    def test_reject_records_the_reviewers_reason(self, reviewer_client):
        approval = ApprovalFactory()

        response = run_action(reviewer_client, "reject_selected", [approval], reason="Over the refund limit.")

        assert "Rejected 1 approval." in shown_messages(response)
        approval.refresh_from_db()
        assert approval.status == "rejected"
        assert approval.decision_reason == "Over the refund limit."

    def test_a_row_someone_else_decided_first_names_who(self, reviewer_client, reviewer):
        fresh = ApprovalFactory()
        taken = ApprovalFactory()
        approval_decide(approval_id=taken.pk, reviewer=ReviewerFactory(username="olivia"), approved=False, reason="No.")

        response = run_action(reviewer_client, "approve_selected", [fresh, taken])

        messages = shown_messages(response)
        assert "Approved 1 approval." in messages
        assert any(f"Approval #{taken.pk} was already rejected by olivia" in m for m in messages)
        taken.refresh_from_db()
        assert (taken.status, taken.decided_by.username) == ("rejected", "olivia")
        fresh.refresh_from_db()
        assert fresh.decided_by == reviewer

    def test_an_expired_row_is_reported_and_left_alone(self, reviewer_client):
        late = ApprovalFactory(expires_at=timezone.now() - timedelta(minutes=1))

        response = run_action(reviewer_client, "approve_selected", [late])

        assert any(f"Approval #{late.pk} expired at" in m for m in shown_messages(response))
        late.refresh_from_db()
        assert late.status != "approved"
        assert late.decided_by is None

    def test_the_requester_cannot_approve_their_own_request(self, client, reviewer):
        own = ApprovalFactory(requested_by=reviewer)
        client.force_login(reviewer)

        response = run_action(client, "approve_selected", [own])

        messages = shown_messages(response)
        assert f"Approval #{own.pk}: You asked for this action, so someone else must decide it." in messages
        assert not any(m.startswith("Approved") for m in messages)
        own.refresh_from_db()
        assert own.status == "pending"
        assert not own.events.filter(kind=ApprovalEvent.Kind.DECIDED).exists()


@pytest.mark.django_db
class TestChangePage:
    def test_approve_button_decides_with_the_reason(self, reviewer_client, reviewer):
        approval = ApprovalFactory()
        page = reviewer_client.get(change_url(approval))
        assert b'name="decision" value="approve"' in page.content
        assert b'name="decision" value="reject"' in page.content

        response = reviewer_client.post(
            decide_url(approval), {"decision": "approve", "reason": "Matches the order."}, follow=True
        )

        assert response.redirect_chain[-1][0] == change_url(approval)
        assert f"Approval #{approval.pk} (refund_order) approved." in shown_messages(response)
        assert b'name="decision"' not in response.content
        approval.refresh_from_db()
        assert (approval.status, approval.decided_by, approval.decision_reason) == (
            "approved",
            reviewer,
            "Matches the order.",
        )

    def test_reject_button_decides_with_the_reason(self, reviewer_client):
        approval = ApprovalFactory()

        response = reviewer_client.post(
            decide_url(approval), {"decision": "reject", "reason": "Customer already refunded."}, follow=True
        )

        assert f"Approval #{approval.pk} (refund_order) rejected." in shown_messages(response)
        assert "Customer already refunded." in response.content.decode()
        approval.refresh_from_db()
        assert (approval.status, approval.decision_reason) == ("rejected", "Customer already refunded.")

    def test_deciding_twice_says_who_decided_first(self, reviewer_client):
        approval = ApprovalFactory()
        approval_decide(approval_id=approval.pk, reviewer=ReviewerFactory(username="olivia"), approved=True)

        response = reviewer_client.post(decide_url(approval), {"decision": "reject"}, follow=True)

        assert any(f"Approval #{approval.pk} was already approved by olivia" in m for m in shown_messages(response))
        approval.refresh_from_db()
        assert approval.status == "approved"

    def test_the_requester_gets_no_buttons_and_cannot_post_a_decision(self, client, reviewer):
        own = ApprovalFactory(requested_by=reviewer)
        client.force_login(reviewer)

        page = client.get(change_url(own))
        response = client.post(decide_url(own), {"decision": "approve"}, follow=True)

        assert b'name="decision"' not in page.content
        assert "You asked for this action, so someone else must decide it." in page.content.decode()
        assert "You asked for this action, so someone else must decide it." in shown_messages(response)
        own.refresh_from_db()
        assert own.status == "pending"

    def test_the_decide_url_only_accepts_post(self, reviewer_client):
        approval = ApprovalFactory()
        assert reviewer_client.get(decide_url(approval)).status_code == 405
        approval.refresh_from_db()
        assert approval.status == "pending"

    def test_the_decide_url_is_csrf_protected(self, reviewer):
        client = Client(enforce_csrf_checks=True)
        client.force_login(reviewer)
        approval = ApprovalFactory()

        assert client.post(decide_url(approval), {"decision": "approve"}).status_code == 403
        approval.refresh_from_db()
        assert approval.status == "pending"

    @pytest.mark.parametrize("who", ["reviewer", "superuser"])
    def test_posting_the_change_form_cannot_alter_status_or_args(self, client, reviewer, admin_user, who):
        client.force_login(reviewer if who == "reviewer" else admin_user)
        approval = ApprovalFactory()

        response = client.post(
            change_url(approval),
            {"status": "approved", "args": '{"amount": 99999, "order_id": "A-1001"}', "decided_by": reviewer.pk},
        )

        assert response.status_code == 403
        approval.refresh_from_db()
        assert approval.status == "pending"
        assert approval.args == {"amount": 150.0, "order_id": "A-1001"}
        assert approval.decided_by is None

    def test_shows_args_pretty_printed_and_every_field_read_only(self, reviewer_client):
        approval = ApprovalFactory(args={"amount": 150.0, "order_id": "A-1001"})

        page = reviewer_client.get(change_url(approval))

        html = page.content.decode()
        assert "<pre>{\n  &quot;amount&quot;: 150.0,\n  &quot;order_id&quot;: &quot;A-1001&quot;\n}</pre>" in html
        assert page.context["adminform"].form.fields == {}
        assert 'name="_save"' not in html

    def test_the_event_log_is_read_only_and_in_order(self, reviewer_client):
        approval = ApprovalFactory()
        ApprovalEventFactory(approval=approval, kind=ApprovalEvent.Kind.REQUESTED)
        ApprovalEventFactory(approval=approval, kind=ApprovalEvent.Kind.NOTIFIED)
        reviewer_client.post(decide_url(approval), {"decision": "approve", "reason": "Fine."})

        page = reviewer_client.get(change_url(approval))

        (events,) = page.context["inline_admin_formsets"]
        assert [form.original.kind for form in events] == ["requested", "notified", "decided"]
        assert not events.has_add_permission
        assert not events.has_change_permission
        assert not events.has_delete_permission
        assert "Event log" in page.content.decode()


@pytest.mark.django_db
def test_model_and_user_text_is_escaped_on_the_changelist_and_change_page(reviewer_client):
    approval = ApprovalFactory(
        args={"note": XSS_SCRIPT, "order_id": XSS_IMG},
        reason=f"Refund {XSS_SCRIPT} {XSS_IMG}",
        conversation_excerpt=[{"role": "user", "content": XSS_SCRIPT}],
    )
    ApprovalEventFactory(approval=approval, kind=ApprovalEvent.Kind.REQUESTED, data={"note": XSS_IMG})

    pages = {
        "changelist": reviewer_client.get(CHANGELIST).content.decode(),
        "change page": reviewer_client.get(change_url(approval)).content.decode(),
        "confirmation": reviewer_client.post(
            CHANGELIST, {"action": "approve_selected", "_selected_action": [approval.pk], "index": "0"}
        ).content.decode(),
    }

    for name, html in pages.items():
        assert "&lt;script&gt;alert(1)" in html, name
        assert "<script>alert(1)" not in html, name
        assert "<img src=x" not in html, name
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages["change page"]


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_an_admin_action_wakes_a_waiting_run_at_once(reviewer_client, redis_url, decision_waiters):
    approval = ApprovalFactory()
    outcome: dict = {}

    def waiter() -> None:
        try:
            outcome["decision"] = approval_wait(approval_id=approval.pk, timeout=10)
        finally:
            outcome["returned_at"] = time.monotonic()
            connection.close()

    thread = threading.Thread(target=waiter)
    thread.start()
    # The waiter is inside its channel wait, so the decision provably arrives mid-wait.
    assert decision_waiters.first(timeout=5) == approval.pk

    decided_at = time.monotonic()
    response = run_action(reviewer_client, "approve_selected", [approval])
    thread.join(timeout=10)

    assert "Approved 1 approval." in shown_messages(response)
    assert not thread.is_alive()
    decision = outcome["decision"]
    assert decision.approved
    assert decision.decided_by == "rita"
    # One BLPOP slice is 5 s: returning well inside it means the channel woke the waiter.
    assert outcome["returned_at"] - decided_at < 2


@pytest.mark.django_db
def test_respond_and_stop_the_run_from_the_admin(client):
    reviewer = ReviewerFactory(username="ada")
    client.force_login(reviewer)
    answered = ApprovalFactory(run_id="r1", call_id="c1")
    stopped = ApprovalFactory(run_id="r2", call_id="c1")
    other_call = ApprovalFactory(run_id="r2", call_id="c2")

    client.post(decide_url(answered), {"decision": "respond", "response": "Refunded by phone (RF-77)."})
    refused = client.post(decide_url(answered), {"decision": "respond", "response": ""}, follow=True)
    client.post(decide_url(stopped), {"decision": "terminate", "reason": "Fraud pattern."})

    answered.refresh_from_db()
    stopped.refresh_from_db()
    other_call.refresh_from_db()
    assert (answered.action, answered.response, answered.decided_by) == (
        "respond",
        "Refunded by phone (RF-77).",
        reviewer,
    )
    assert any("already" in m for m in shown_messages(refused))
    assert (stopped.action, stopped.decision_reason) == ("terminate", "Fraud pattern.")
    assert other_call.status == "cancelled"
    page = client.get(change_url(ApprovalFactory())).content.decode()
    assert 'value="respond"' in page
    assert 'value="terminate"' in page


@pytest.mark.django_db
def test_the_admin_list_shows_the_outcome_and_the_pending_badge_meets_aa(client):
    ApprovalFactory(
        status="approved",
        action="approve",
        outcome={"outcome": "ran", "result": {"order_id": "A-1001", "refund_id": "RF-12"}, "message": None},
    )
    ApprovalFactory()
    client.force_login(AdminFactory())
    page = client.get("/admin/approvals/approval/").content.decode()
    assert "Approved — refund RF-12" in page
    assert "Pending" in page
    assert STATUS_COLOURS["pending"] == "#8a5a00"  # white on it: 5.9:1
