"""The customer chat end to end: a real browser, a real Celery worker, a reviewer in another browser.

Alice asks for a refund that needs approval; the run blocks in the worker (it does not suspend)
while her page shows, live, that it waits for a reviewer and why; a reviewer decides on /review/;
her page shows the outcome without a reload, and a reload shows the same history.

Set ``ANVIA_SCREENSHOT_DIR`` (e.g. ``/tmp``) to keep screenshots of Alice's page.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from django.test import override_settings
from playwright.sync_api import Browser, Page, WebSocketRoute, expect

from agents.models import AgentRun
from agents.support import support_agent
from approvals.models import Approval
from shop.models import Refund
from tests.factories import PASSWORD, OrderFactory, ReviewerFactory, UserFactory
from tests.support.live_server import LiveServerWithWorkerTestCase
from tests.support.waiting import wait_until

TIMEOUT_MS = 15_000
REASON = "Review refund of $150.00 for A-1001."
PREPARING = "Preparing a $150.00 refund for order A-1001…"
ASKING = "A staff member needs to approve this $150.00 refund."
REFUNDED = re.compile(r"^Approved — refund RF-\d+ made: \$150\.00 back for order A-1001\.$")
TOOL_NAMES = ("lookup_order", "refund_order", "cancel_order")
IMG = '<img src=x onerror="window.__xss=1">'

NO_INJECTED_MARKUP = """() => ({
  xss: typeof window.__xss,
  images: document.querySelectorAll('img[src="x"]').length,
  handlers: document.querySelectorAll("[onerror]").length,
})"""
SAFE = {"xss": "undefined", "images": 0, "handlers": 0}


@pytest.mark.browser
@pytest.mark.redis
# Long enough that the run waits in the worker for the reviewer instead of suspending.
@override_settings(ANVIA_APPROVAL_BLOCK_SECONDS=30)
class ChatFlowInBrowserTests(LiveServerWithWorkerTestCase):
    @pytest.fixture(autouse=True)
    def use_pages(self, page: Page, browser: Browser):
        page.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        self.page = page
        reviewer_context = browser.new_context()
        self.reviewer_page = reviewer_context.new_page()
        self.reviewer_page.set_default_timeout(TIMEOUT_MS)
        yield
        reviewer_context.close()

    def setUp(self):
        self.alice = UserFactory(username="alice")
        OrderFactory(
            number="A-1001", customer=self.alice, description="Espresso machine", total="249.00", status="delivered"
        )
        self.reviewer = ReviewerFactory(username="rita")

    def url(self, path: str) -> str:
        return self.live_server_url + path

    def log_in(self, page: Page, user, then: str) -> None:
        page.goto(self.url(f"/accounts/login/?next={then}"))
        page.get_by_label("Username").fill(user.get_username())
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(self.url(then))

    def screenshot(self, name: str) -> None:
        folder = os.environ.get("ANVIA_SCREENSHOT_DIR")
        if folder:
            self.page.screenshot(path=str(Path(folder) / f"chat-{name}.png"), full_page=True)

    def open_new_conversation(self) -> None:
        page = self.page
        self.log_in(page, self.alice, "/chat/")
        page.get_by_role("button", name="New conversation").click()
        expect(page.locator("#chat-empty")).to_be_visible()
        expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
        # Survives only as long as the page is not reloaded.
        page.evaluate("window.__sameDocument = true")

    def ask_and_wait_for_reviewer(self, text: str) -> Approval:
        page = self.page
        self.log_in(self.reviewer_page, self.reviewer, "/review/")
        expect(self.reviewer_page.locator("#live-status")).to_have_attribute("data-state", "live")

        page.get_by_label("Your message").fill(text)
        page.get_by_role("button", name="Send").click()

        turn = page.locator("li.turn").last
        expect(turn.locator(".bubble.customer .text")).to_have_text(text)
        expect(turn.locator(".step.tool_call")).to_have_text(PREPARING)
        expect(turn.locator(".step.waiting")).to_have_text(ASKING)
        expect(turn.locator(".run-status")).to_have_text("Waiting for a reviewer…")
        self.assert_plain_words(turn)
        expect(page.get_by_label("Your message")).to_have_value("")
        expect(page.locator("#chat-title")).to_have_text(text)
        approval = Approval.objects.get()
        assert AgentRun.objects.get().status == AgentRun.Status.WAITING_FOR_APPROVAL
        self.screenshot(f"waiting-{self._testMethodName}")
        return approval

    def decide(self, approval: Approval, *, button: str, reason: str = "") -> None:
        page = self.reviewer_page
        page.get_by_role("link", name=f"Review #{approval.pk}").click()
        expect(page.locator(".detail-main .reason-text")).to_have_text(REASON)
        if reason:
            page.get_by_label("Reason").fill(reason)
        page.get_by_role("button", name=button).click()
        expect(page).to_have_url(self.url("/review/"))

    def assert_plain_words(self, turn) -> None:
        """The customer reads no tool name and no raw field anywhere in the turn's timeline."""
        for line in turn.locator(".step").all_inner_texts():
            assert "{" not in line, line
            assert not any(name in line for name in TOOL_NAMES), line

    def timeline_after_reload_is_the_same(self) -> None:
        page = self.page
        turn = page.locator("li.turn").last
        # The streamed draft can hold the whole answer a moment before run.finished replaces it.
        expect(turn).to_have_attribute("data-status", re.compile(r"^(succeeded|failed|stopped)$"))
        expect(turn.locator(".bubble.agent.draft")).to_have_count(0)
        live = turn.inner_text()
        page.reload()
        expect(page.locator("li.turn").last).to_have_text(live.strip(), use_inner_text=True)

    def test_an_approved_refund_is_shown_done_without_a_reload(self):
        page = self.page
        self.open_new_conversation()
        page.get_by_label("Your message").fill("   ")
        page.get_by_label("Your message").press("Enter")
        expect(page.locator("#chat-error")).to_have_text("The message is empty.")
        expect(page.locator("li.turn")).to_have_count(0)
        approval = self.ask_and_wait_for_reviewer("refund order A-1001, $150")

        self.decide(approval, button="Approve", reason="Customer is eligible.")

        turn = page.locator("li.turn").last
        expect(turn.locator(".bubble.agent .text")).to_contain_text("Done: I refunded $150.00 for order A-1001")
        expect(turn.locator(".step")).to_have_text([PREPARING, ASKING, REFUNDED])
        self.assert_plain_words(turn)
        expect(turn.locator(".run-status")).to_be_hidden()
        assert page.evaluate("window.__sameDocument") is True
        self.screenshot(f"answered-{self._testMethodName}")

        refund = Refund.objects.get()
        assert (refund.order.number, str(refund.amount)) == ("A-1001", "150.00")
        run = AgentRun.objects.get()
        assert (run.status, run.attempts) == (AgentRun.Status.SUCCEEDED, 1)  # it blocked; it never suspended
        self.timeline_after_reload_is_the_same()

        page.get_by_role("link", name="All conversations").click()
        expect(page.locator("ol.conversations a")).to_contain_text(["refund order A-1001, $150"])
        self.screenshot(f"list-{self._testMethodName}")

    def test_a_rejected_refund_is_explained_with_the_reviewer_s_reason(self):
        page = self.page
        self.open_new_conversation()
        approval = self.ask_and_wait_for_reviewer(f"refund order A-1001, $150 {IMG}")
        # A reload mid-wait shows the same, and the page goes on listening.
        page.reload()
        turn = page.locator("li.turn").last
        expect(turn.locator(".step.waiting")).to_have_text(ASKING)
        expect(turn.locator(".run-status")).to_have_text("Waiting for a reviewer…")
        expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
        page.evaluate("window.__sameDocument = true")

        self.decide(approval, button="Reject", reason="Already refunded in store")

        turn = page.locator("li.turn").last
        said = "Refund was not approved. Reviewer's reason: Already refunded in store"
        expect(turn.locator(".step.rejected")).to_have_text(f"Not approved: {said}")
        expect(turn.locator(".bubble.agent .text")).to_have_text(f"That didn't go through. {said}")
        assert page.evaluate("window.__sameDocument") is True
        assert page.evaluate(NO_INJECTED_MARKUP) == SAFE
        self.screenshot(f"answered-{self._testMethodName}")

        assert not Refund.objects.exists()
        assert AgentRun.objects.get().attempts == 1
        self.timeline_after_reload_is_the_same()
        assert page.evaluate(NO_INJECTED_MARKUP) == SAFE

    def test_the_page_catches_up_on_what_it_missed_while_its_socket_was_down(self):
        page = self.page
        sockets: list[WebSocketRoute] = []

        def first_socket_hears_nothing(socket: WebSocketRoute) -> None:
            # The first socket opens but is never connected to the server: a connection that
            # silently lost everything. Later ones (the reconnects) reach the server.
            sockets.append(socket)
            if len(sockets) > 1:
                socket.connect_to_server()

        page.route_web_socket(re.compile(r"/ws/conversations/\d+/$"), first_socket_hears_nothing)
        self.open_new_conversation()
        self.log_in(self.reviewer_page, self.reviewer, "/review/")
        page.get_by_label("Your message").fill("refund order A-1001, $150")
        page.get_by_role("button", name="Send").click()

        expect(self.reviewer_page.locator("#pending-rows tr")).to_have_count(1)
        self.decide(Approval.objects.get(), button="Approve")
        wait_until(
            lambda: AgentRun.objects.filter(status=AgentRun.Status.SUCCEEDED).exists(),
            timeout=TIMEOUT_MS / 1000,
            message="the run never finished",
        )
        turn = page.locator("li.turn").last
        expect(turn.locator(".run-status")).to_have_text("The agent is working…")
        expect(turn.locator(".step")).to_have_count(0)

        sockets[0].close()

        expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
        expect(turn.locator(".step")).to_have_text([PREPARING, ASKING, REFUNDED])
        expect(turn.locator(".bubble.agent .text")).to_contain_text("Done: I refunded $150.00 for order A-1001")
        expect(turn.locator(".run-status")).to_be_hidden()
        assert page.evaluate("window.__sameDocument") is True
        assert len(sockets) == 2
        self.timeline_after_reload_is_the_same()

    def test_a_run_that_fails_is_explained_in_plain_words(self):
        page = self.page
        self.open_new_conversation()
        # Nothing listens on port 9: the model is unreachable, and the run fails.
        with override_settings(ANVIA_MODEL="llama3.2", OPENAI_BASE_URL="http://127.0.0.1:9/v1"):
            support_agent.model.__dict__.pop("client", None)
            try:
                page.get_by_label("Your message").fill("hello")
                page.get_by_role("button", name="Send").click()
                turn = page.locator("li.turn").last
                expect(turn.locator(".bubble.agent.failed .text")).to_have_text(
                    re.compile(r"^Sorry, the assistant is unavailable right now")
                )
            finally:
                support_agent.model.__dict__.pop("client", None)
        expect(turn.locator(".step.error")).to_have_text("The assistant could not be reached.")
        expect(turn.locator(".run-status")).to_be_hidden()
        assert "127.0.0.1:9" not in page.locator("#chat-log").inner_text()
        assert AgentRun.objects.get().status == AgentRun.Status.FAILED
        self.timeline_after_reload_is_the_same()
