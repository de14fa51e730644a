"""Reviewers without the queue open hear of a new request by email (and a webhook): exactly those
who may decide it, once each, with a link that still needs a sign-in; failures retry and never
touch the decision path."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.conf import settings
from django.core import mail
from django.test import Client

from approvals import tasks
from approvals.models import Approval, ReviewerPreference
from approvals.services import ApprovalRequest, approval_decide, approval_request
from tests.factories import PASSWORD, ReviewerFactory, UserFactory

pytestmark = pytest.mark.django_db


def a_request(requested_by, **overrides) -> ApprovalRequest:
    values = {
        "run_id": "run-1",
        "call_id": "call_1",
        "tool_name": "refund_order",
        "args": {"order_id": "A-1001", "amount": 131.0},
        "reason": "Review refund of $131.00 for A-1001 <!channel>.",
        "requested_by_id": requested_by.pk,
    }
    return ApprovalRequest(**{**values, **overrides})


@pytest.fixture
def tasks_run_now(monkeypatch):
    """The tasks the services queue run at once, in this process, retries and all (eager apply)."""
    applied = []

    def now(task):
        def delay(*args):
            applied.append(task.apply(args=args))

        return delay

    monkeypatch.setattr(tasks.email_reviewers, "delay", now(tasks.email_reviewers))
    monkeypatch.setattr(tasks.post_webhook, "delay", now(tasks.post_webhook))
    return applied


def ask(requester, django_capture_on_commit_callbacks, **overrides) -> Approval:
    with django_capture_on_commit_callbacks(execute=True):
        approval, _ = approval_request(request=a_request(requester, **overrides))
    return approval


def test_email_goes_to_exactly_the_reviewers_who_may_decide(tasks_run_now, django_capture_on_commit_callbacks):
    rita = ReviewerFactory(username="rita", email="rita@example.com")
    sam = ReviewerFactory(username="sam", email="sam@example.com")
    requester = ReviewerFactory(username="asker", email="asker@example.com")  # a reviewer, but asked
    ReviewerFactory(username="gone", email="gone@example.com", is_active=False)
    ReviewerPreference.objects.create(user=ReviewerFactory(username="quiet", email="quiet@example.com"), email=False)
    UserFactory(username="staffer", email="staffer@example.com", is_staff=True)  # staff, no permission
    UserFactory(username="customer", email="customer@example.com")
    ReviewerFactory(username="noaddress", email="")

    approval = ask(requester, django_capture_on_commit_callbacks)

    assert sorted(message.to[0] for message in mail.outbox) == ["rita@example.com", "sam@example.com"]
    assert all(len(message.to) == 1 for message in mail.outbox)  # nobody sees another's address
    link = f"{settings.ANVIA_PUBLIC_URL}/review/{approval.pk}/"
    assert link in mail.outbox[0].body
    assert "Review refund of $131.00 for A-1001" in mail.outbox[0].body
    assert {rita.pk, sam.pk} == {m for e in approval.events.filter(kind="notified") for m in e.data.get("to", [])}


def test_the_link_opens_the_request_only_after_signing_in(tasks_run_now, django_capture_on_commit_callbacks):
    ReviewerFactory(username="rita", email="rita@example.com")
    approval = ask(UserFactory(username="alice"), django_capture_on_commit_callbacks)
    (message,) = mail.outbox
    link = next(word for word in message.body.split() if word.startswith(settings.ANVIA_PUBLIC_URL))
    path = link.removeprefix(settings.ANVIA_PUBLIC_URL)

    client = Client()
    response = client.get(path)
    assert response.status_code == 302
    assert response.url.startswith(settings.LOGIN_URL)

    signed_in = client.post(response.url, {"username": "rita", "password": PASSWORD}, follow=True)
    assert signed_in.redirect_chain[-1][0] == path
    assert signed_in.status_code == 200
    assert b"Review refund of $131.00 for A-1001" in signed_in.content
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING  # opening the link decided nothing


def test_a_reviewer_can_turn_email_off_and_on(client, tasks_run_now, django_capture_on_commit_callbacks):
    rita = ReviewerFactory(username="rita", email="rita@example.com")
    client.force_login(rita)
    page = client.get("/review/settings/")
    assert page.status_code == 200
    assert b'name="email" checked' in page.content

    client.post("/review/settings/", {})
    assert client.get("/review/settings/").content.count(b" checked") == 0
    ask(UserFactory(username="alice"), django_capture_on_commit_callbacks)
    assert mail.outbox == []

    client.post("/review/settings/", {"email": "on"})
    ask(UserFactory(username="bob"), django_capture_on_commit_callbacks, run_id="run-2")
    assert [m.to for m in mail.outbox] == [["rita@example.com"]]


def test_customers_have_no_review_settings(client):
    client.force_login(UserFactory(username="alice"))
    assert client.get("/review/settings/").status_code == 403


def test_a_failed_send_is_retried_without_emailing_anyone_twice(
    monkeypatch, tasks_run_now, django_capture_on_commit_callbacks
):
    ReviewerFactory(username="rita", email="rita@example.com")
    ReviewerFactory(username="sam", email="sam@example.com")
    from django.core.mail import EmailMessage

    real_send = EmailMessage.send
    failures = iter([False, True])  # the second message of the first attempt fails

    def flaky_send(message, *args, **kwargs):
        if next(failures, False):
            raise ConnectionError("mail server went away")
        return real_send(message, *args, **kwargs)

    monkeypatch.setattr(EmailMessage, "send", flaky_send)
    ask(UserFactory(username="alice"), django_capture_on_commit_callbacks)

    assert sorted(m.to[0] for m in mail.outbox) == ["rita@example.com", "sam@example.com"]
    assert tasks_run_now[0].successful()


def test_no_email_once_the_request_is_decided(django_capture_on_commit_callbacks):
    rita = ReviewerFactory(username="rita", email="rita@example.com")
    with django_capture_on_commit_callbacks(execute=False):
        approval, _ = approval_request(request=a_request(UserFactory(username="alice")))
    approval_decide(approval_id=approval.pk, reviewer=rita, approved=True, reason="")
    assert tasks.email_reviewers.apply(args=[approval.pk]).get() == 0
    assert mail.outbox == []


class Webhook:
    """A local Slack-style webhook that answers 500 to the first ``failures`` posts."""

    def __init__(self, failures: int):
        self.bodies: list[dict] = []
        self.failures = failures
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                hook.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                status = 500 if len(hook.bodies) <= hook.failures else 200
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T/B/secret"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook(request, settings):
    hook = Webhook(failures=getattr(request, "param", 0))
    settings.ANVIA_SLACK_WEBHOOK_URL = hook.url
    yield hook
    hook.close()


@pytest.mark.parametrize("webhook", [2], indirect=True)
def test_a_failing_webhook_is_retried_and_the_text_is_plain(webhook, tasks_run_now, django_capture_on_commit_callbacks):
    approval = ask(UserFactory(username="alice"), django_capture_on_commit_callbacks)

    assert len(webhook.bodies) == 3  # two 500s, then delivered
    (text,) = {body["text"] for body in webhook.bodies}
    assert f"{settings.ANVIA_PUBLIC_URL}/review/{approval.pk}/" in text
    assert "<!channel>" not in text  # a model's reason pings nobody
    assert "&lt;!channel&gt;" in text
    assert approval.events.filter(kind="notified", data__channel="webhook").count() == 1


@pytest.mark.parametrize("webhook", [100], indirect=True)
def test_a_webhook_that_never_works_does_not_touch_the_decision(
    webhook, tasks_run_now, django_capture_on_commit_callbacks
):
    rita = ReviewerFactory(username="rita", email="rita@example.com")
    approval = ask(UserFactory(username="alice"), django_capture_on_commit_callbacks)
    email_sent, webhook_posted = tasks_run_now
    assert email_sent.successful()
    assert webhook_posted.failed()  # gave up after its retries
    assert len(webhook.bodies) == tasks.NOTIFY_RETRIES + 1
    assert [m.to for m in mail.outbox] == [["rita@example.com"]]  # email went anyway

    decided = approval_decide(approval_id=approval.pk, reviewer=rita, approved=True, reason="")
    assert decided.status == Approval.Status.APPROVED


def test_an_unreachable_webhook_does_not_fail_the_request(settings, django_capture_on_commit_callbacks):
    settings.ANVIA_SLACK_WEBHOOK_URL = "http://127.0.0.1:9/hook"
    rita = ReviewerFactory(username="rita", email="rita@example.com")
    # Queued for real (the broker), as in production; the request and its decision go on.
    approval = ask(UserFactory(username="alice"), django_capture_on_commit_callbacks)
    assert approval_decide(approval_id=approval.pk, reviewer=rita, approved=True, reason="").status == "approved"


def test_nothing_is_queued_where_reviewer_notifications_are_off(
    tasks_run_now, django_capture_on_commit_callbacks, settings
):
    # Studio's script turns them off: one process, no Celery, the reviewer is at the page.
    settings.ANVIA_REVIEWER_NOTIFICATIONS = False
    settings.ANVIA_SLACK_WEBHOOK_URL = "http://127.0.0.1:9/hook"
    ReviewerFactory(username="rita", email="rita@example.com")

    ask(UserFactory(username="carol"), django_capture_on_commit_callbacks)

    assert tasks_run_now == []
    assert mail.outbox == []
