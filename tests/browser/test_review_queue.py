"""The reviewer queue in a real browser: live over the websocket, deciding, and untrusted text."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections
from playwright.sync_api import Page, expect

from approvals.models import Approval
from approvals.services import ApprovalRequest, approval_decide, approval_request
from tests.factories import PASSWORD, AdminFactory, ReviewerFactory, UserFactory
from tests.support.live_server import LiveServerTestCase

SCRIPT = "<script>window.__xss=1</script>"
IMG = '<img src=x onerror="window.__xss=1">'
TIMEOUT_MS = 10_000

NO_INJECTED_MARKUP = """() => ({
  xss: typeof window.__xss,
  scripts: [...document.scripts].filter((s) => s.text.includes("__xss")).length,
  images: document.querySelectorAll('img[src="x"]').length,
  handlers: document.querySelectorAll("[onerror]").length,
})"""
SAFE = {"xss": "undefined", "scripts": 0, "images": 0, "handlers": 0}

SHOWS_AS_TEXT = """(needle) => document.body.innerText.includes(needle)
  || [...document.querySelectorAll("textarea, input")].some((field) => field.value.includes(needle))"""


def in_another_thread(function, /, **kwargs):
    """Run ORM + channel-layer code off the main thread, where Playwright's event loop lives.

    ``notify_reviewers`` uses ``async_to_sync``, which refuses to run beside a running loop.
    """

    def call():
        try:
            return function(**kwargs)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(call).result(timeout=30)


def request_approval(*, requester, call_id: str, **fields) -> Approval:
    request = ApprovalRequest(
        run_id="run-browser",
        call_id=call_id,
        tool_name=fields.pop("tool_name", "refund_order"),
        args=fields.pop("args", {"order_id": "A-1001", "amount": 150.0}),
        reason=fields.pop("reason", "Review refund of $150.0 for A-1001."),
        requested_by_id=requester.pk,
        **fields,
    )
    approval, created = in_another_thread(approval_request, request=request)
    assert created
    return approval


@pytest.mark.browser
class ReviewQueueInBrowserTests(LiveServerTestCase):
    @pytest.fixture(autouse=True)
    def use_page(self, page: Page) -> None:
        page.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        self.page = page

    def url(self, path: str) -> str:
        return self.live_server_url + path

    def log_in(self, user, then: str = "/review/") -> None:
        self.page.goto(self.url(f"/accounts/login/?next={then}"))
        self.page.get_by_label("Username").fill(user.get_username())
        self.page.get_by_label("Password").fill(PASSWORD)
        self.page.get_by_role("button", name="Log in").click()
        expect(self.page).to_have_url(self.url(then))

    def wait_until_live(self) -> None:
        # "live" is set once the socket is open and the catch-up fetch is in, so whatever shows up
        # after this came over the socket.
        expect(self.page.locator("#live-status")).to_have_attribute("data-state", "live")

    def row(self, approval: Approval):
        return self.page.locator(f'#pending-rows tr[data-approval-id="{approval.pk}"]')

    def test_a_new_request_appears_live_and_is_approved_from_its_page(self):
        page = self.page
        reviewer = ReviewerFactory(username="rita")
        colleague = ReviewerFactory(username="bob")
        requester = UserFactory(username="carol")
        self.log_in(reviewer)
        expect(page.locator("#queue-empty")).to_be_visible()
        self.wait_until_live()

        first = request_approval(requester=requester, call_id="call_1")
        expect(self.row(first)).to_contain_text("refund_order")
        expect(self.row(first)).to_contain_text("Review refund of $150.0 for A-1001.")
        expect(self.row(first)).to_contain_text("carol")
        # Amount and customer are not in the socket's summary; the page fetches them.
        expect(self.row(first).locator("td.amount")).to_have_text("$150")
        expect(page.locator("#queue-empty")).to_be_hidden()
        second = request_approval(requester=requester, call_id="call_2", reason="Second refund.")
        expect(page.locator("#pending-rows tr")).to_have_count(2)
        expect(page.locator("#pending-count")).to_have_text("2")

        # Somebody else decides the second one: it leaves with who decided.
        in_another_thread(approval_decide, approval_id=second.pk, reviewer=colleague, approved=False)
        expect(self.row(second)).to_have_text(f"#{second.pk} refund_order: rejected by bob")
        expect(page.locator("#pending-count")).to_have_text("1")

        page.get_by_role("link", name=f"Review #{first.pk}").click()
        expect(page).to_have_url(self.url(f"/review/{first.pk}/"))
        expect(page.locator("#approval-args")).to_contain_text('"order_id": "A-1001"')
        page.get_by_label("Reason").fill("Customer is eligible.")
        page.get_by_role("button", name="Approve").click()

        expect(page).to_have_url(self.url("/review/"))
        expect(page.locator(".messages")).to_contain_text(f"Approved #{first.pk} refund_order.")
        expect(page.locator("#pending-rows tr")).to_have_count(0)
        expect(page.locator("#queue-empty")).to_be_visible()
        first.refresh_from_db()
        assert first.status == Approval.Status.APPROVED
        assert first.decided_by == reviewer
        assert first.decision_reason == "Customer is eligible."

    def test_the_queue_catches_up_on_what_it_missed_while_its_socket_was_down(self):
        page = self.page
        reviewer = ReviewerFactory()
        colleague = ReviewerFactory(username="bob")
        requester = UserFactory()
        decided_meanwhile = request_approval(requester=requester, call_id="call_decided")
        socket_allowed = False

        def route(socket) -> None:
            # While "down", every connection is dropped at once; afterwards it reaches the server.
            if socket_allowed:
                socket.connect_to_server()
            else:
                socket.close()

        page.route_web_socket(re.compile(r"/ws/approvals/$"), route)
        self.log_in(reviewer)
        expect(self.row(decided_meanwhile)).to_contain_text("refund_order")
        expect(page.locator("#live-status")).to_have_attribute("data-state", "offline")
        expect(page.locator("#live-status")).to_contain_text("Reconnecting in")

        created_meanwhile = request_approval(requester=requester, call_id="call_created")
        in_another_thread(approval_decide, approval_id=decided_meanwhile.pk, reviewer=colleague, approved=True)
        socket_allowed = True

        self.wait_until_live()
        expect(self.row(created_meanwhile)).to_contain_text("refund_order")
        expect(self.row(decided_meanwhile)).to_have_text(f"#{decided_meanwhile.pk} is no longer pending")
        expect(page.locator("#pending-count")).to_have_text("1")

    def test_model_written_text_stays_text_in_the_queue_and_detail(self):
        page = self.page
        admin = AdminFactory(username="root")
        self.log_in(admin)
        self.wait_until_live()

        reason = f"Refund {SCRIPT} {IMG}"
        approval = request_approval(
            requester=UserFactory(),
            call_id="call_xss",
            reason=reason,
            args={"order_id": SCRIPT, "note": IMG},
            conversation_excerpt=[{"role": "user", "content": f"Please {SCRIPT}{IMG}"}],
        )

        # Added live by the script.
        expect(self.row(approval).locator("td.reason")).to_have_text(reason)
        assert page.evaluate(NO_INJECTED_MARKUP) == SAFE

        # Rendered by the server.
        page.reload()
        expect(self.row(approval).locator("td.reason")).to_have_text(reason)
        assert page.evaluate(NO_INJECTED_MARKUP) == SAFE

        page.goto(self.url(f"/review/{approval.pk}/"))
        expect(page.locator(".detail-main .reason-text")).to_have_text(reason)
        expect(page.locator("#approval-args")).to_contain_text(f'"order_id": "{SCRIPT}"')
        expect(page.locator("#approval-args")).to_contain_text('"note": "<img src=x onerror=\\"window.__xss=1\\">"')
        expect(page.locator(".excerpt")).to_contain_text(f"Please {SCRIPT}{IMG}")
        assert page.evaluate(NO_INJECTED_MARKUP) == SAFE

    def test_model_written_text_stays_text_in_the_admin(self):
        page = self.page
        admin = AdminFactory(username="root")
        approval = request_approval(
            requester=UserFactory(),
            call_id="call_xss_admin",
            reason=f"Refund {SCRIPT} {IMG}",
            args={"order_id": SCRIPT, "note": IMG},
        )
        self.log_in(admin, then=f"/admin/approvals/approval/{approval.pk}/change/")
        expect(page.locator("#content")).to_contain_text(re.compile(r"refund_order"))
        assert page.evaluate(SHOWS_AS_TEXT, f"Refund {SCRIPT} {IMG}")
        assert page.evaluate(SHOWS_AS_TEXT, SCRIPT)
        assert page.evaluate(NO_INJECTED_MARKUP) == SAFE
