"""Decisions that fit real calls, in real browsers with a real Celery worker: two refunds of one
message pending at once and decided separately, an edited amount the customer is told about
truthfully, and a preview whose warning the reviewer reads before deciding.

Alice chats in one browser context, Rita reviews on /review/ in another. Set
``ANVIA_SCREENSHOT_DIR`` (e.g. ``/tmp``) to keep screenshots of both pages.
"""

from __future__ import annotations

import os
import re
from decimal import Decimal
from pathlib import Path

import pytest
from django.test import override_settings
from playwright.sync_api import Browser, Page, expect

from agents.models import AgentRun
from approvals.models import Approval
from shop.models import Refund
from tests.factories import PASSWORD, OrderFactory, RefundFactory, ReviewerFactory, UserFactory
from tests.support.live_server import LiveServerWithWorkerTestCase
from tests.support.waiting import wait_until

TIMEOUT_MS = 15_000


@pytest.mark.browser
@pytest.mark.redis
# Long enough that the run waits in the worker for the reviewer instead of suspending.
@override_settings(ANVIA_APPROVAL_BLOCK_SECONDS=30)
class StepDecisionsInBrowserTests(LiveServerWithWorkerTestCase):
    @pytest.fixture(autouse=True)
    def use_pages(self, page: Page, browser: Browser):
        page.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        page.set_viewport_size({"width": 1280, "height": 900})
        self.page = page
        reviewer_context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.reviewer_page = reviewer_context.new_page()
        self.reviewer_page.set_default_timeout(TIMEOUT_MS)
        yield
        reviewer_context.close()

    def setUp(self):
        self.alice = UserFactory(username="alice")
        self.a1001 = OrderFactory(
            number="A-1001", customer=self.alice, description="Espresso machine", total="249.00", status="delivered"
        )
        OrderFactory(number="A-1002", customer=self.alice, description="Grinder", total="200.00", status="delivered")
        self.reviewer = ReviewerFactory(username="rita")

    # -- the two people -----------------------------------------------------------------------

    def url(self, path: str) -> str:
        return self.live_server_url + path

    def log_in(self, page: Page, user, then: str) -> None:
        page.goto(self.url(f"/accounts/login/?next={then}"))
        page.get_by_label("Username").fill(user.get_username())
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(self.url(then))

    def screenshot(self, page: Page, name: str) -> None:
        folder = os.environ.get("ANVIA_SCREENSHOT_DIR")
        if folder:
            page.screenshot(path=str(Path(folder) / f"step-{name}.png"), full_page=True)

    def ask(self, text: str, *, approvals: int) -> list[Approval]:
        """Alice sends ``text``; Rita's live queue shows ``approvals`` requests, all at once."""
        page, queue = self.page, self.reviewer_page
        self.log_in(queue, self.reviewer, "/review/")
        expect(queue.locator("#live-status")).to_have_attribute("data-state", "live")
        self.log_in(page, self.alice, "/chat/")
        page.get_by_role("button", name="New conversation").click()
        expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
        page.get_by_label("Your message").fill(text)
        page.get_by_role("button", name="Send").click()
        expect(page.locator("li.turn").last.locator(".bubble.customer .text")).to_have_text(text)
        expect(queue.locator("#pending-rows tr")).to_have_count(approvals)
        expect(queue.locator("#pending-count")).to_have_text(str(approvals))
        pending = list(Approval.objects.order_by("pk"))
        assert [a.status for a in pending] == ["pending"] * approvals
        assert AgentRun.objects.get().status == AgentRun.Status.WAITING_FOR_APPROVAL
        return pending

    def open_review(self, approval: Approval) -> Page:
        queue = self.reviewer_page
        queue.goto(self.url("/review/"))
        queue.get_by_role("link", name=f"Review #{approval.pk}").click()
        expect(queue).to_have_url(self.url(f"/review/{approval.pk}/"))
        return queue

    def answer(self) -> str:
        bubble = self.page.locator("li.turn").last.locator(".bubble.agent .text")
        expect(bubble).to_be_visible()
        return bubble.inner_text()

    def run_finished(self) -> AgentRun:
        return wait_until(
            lambda: AgentRun.objects.filter(status__in=AgentRun.FINISHED).first(),
            timeout=TIMEOUT_MS / 1000,
            message="the run never finished",
        )

    # -- the tests ----------------------------------------------------------------------------

    def test_two_refunds_of_one_message_are_pending_at_once_and_decided_separately(self):
        first, second = self.ask("refund order A-1001, $150 and order A-1002, $120", approvals=2)
        assert [(a.args["order_id"], a.args["amount"]) for a in (first, second)] == [
            ("A-1001", 150.0),
            ("A-1002", 120.0),
        ]
        assert first.run_id == second.run_id
        queue = self.reviewer_page
        expect(queue.locator("#pending-rows tr td.reason")).to_have_text(
            ["Review refund of $150.00 for A-1001.", "Review refund of $120.00 for A-1002."]
        )
        self.screenshot(queue, "two-pending-queue")

        # The second first: rejecting it alone runs nothing; the customer still waits.
        review = self.open_review(second)
        review.get_by_label("Reason").fill("Already refunded in store")
        review.get_by_role("button", name="Reject").click()
        # The next pending request opens by itself.
        expect(review).to_have_url(self.url(f"/review/{first.pk}/"))
        expect(review.locator(".messages")).to_contain_text(f"Rejected #{second.pk} refund_order.")
        turn = self.page.locator("li.turn").last
        expect(turn.locator(".run-status")).to_have_text("Waiting for a reviewer…")
        assert not Refund.objects.exists()

        review.get_by_role("button", name="Approve").click()
        expect(review).to_have_url(self.url("/review/"))

        said = "Refund was not approved. Reviewer's reason: Already refunded in store"
        expect(turn.locator(".bubble.agent .text")).to_have_text(
            re.compile(
                r"^Done: I refunded \$150\.00 for order A-1001 \(refund RF-\d+\)\. "
                + re.escape(f"That didn't go through. {said}")
                + "$"
            )
        )
        expect(turn.locator(".run-status")).to_be_hidden()
        self.screenshot(self.page, "two-decided-chat")
        refund = Refund.objects.get()
        assert (refund.order.number, refund.amount) == ("A-1001", Decimal("150.00"))
        assert self.run_finished().status == AgentRun.Status.SUCCEEDED

    def test_an_edited_amount_is_what_ran_and_what_the_customer_reads(self):
        (approval,) = self.ask("refund order A-1001, $118", approvals=1)
        review = self.open_review(approval)
        amount = review.get_by_label("Amount ($)")
        expect(amount).to_have_value("118")
        expect(review.locator("#id_arg__amount-help")).to_have_text("Proposed: 118. Must be more than $0.")
        amount.fill("0")
        review.get_by_role("button", name="Approve").click()
        expect(review.locator("#id_arg__amount-error")).to_have_text("Amount must be more than $0.")
        assert Approval.objects.get(pk=approval.pk).is_pending
        review.get_by_label("Amount ($)").fill("105")
        review.get_by_label("Reason").fill("Shipping is not refundable.")
        self.screenshot(review, "edit-review")
        review.get_by_role("button", name="Approve").click()
        expect(review).to_have_url(self.url("/review/"))

        bubble = self.page.locator("li.turn").last.locator(".bubble.agent .text")
        expect(bubble).to_contain_text("I refunded $105.00 (a reviewer changed it from $118.00)")
        expect(bubble).to_have_text(
            re.compile(r"^Done: I refunded \$105\.00 \(a reviewer changed it from \$118\.00\) for order A-1001")
        )
        assert "didn't go through" not in self.answer()
        self.screenshot(self.page, "edit-chat")
        assert Refund.objects.get().amount == Decimal("105.00")
        approval.refresh_from_db()
        assert (approval.status, approval.edited_args) == ("approved", {"order_id": "A-1001", "amount": 105})

        # Proposed → edited → executed, in words.
        review.goto(self.url(f"/review/{approval.pk}/"))
        expect(review.locator("#arg-changes li.changed")).to_have_text("amount 118 → 105")
        expect(review.locator(".executed")).to_have_text(re.compile(r"^Executed: Approved — refund RF-\d+$"))
        self.screenshot(review, "edit-decided")

    def test_an_approved_refund_that_fails_says_so_in_the_queue(self):
        (approval,) = self.ask("refund order A-1001, $150", approvals=1)
        # While it waits, the order is refunded elsewhere: only $80.00 is left when it runs.
        RefundFactory(order=self.a1001, amount=Decimal("169.00"))
        review = self.open_review(approval)
        review.get_by_role("button", name="Approve").click()
        expect(review).to_have_url(self.url("/review/"))
        failed = "Approved — failed: Order A-1001 has only $80.00 left to refund (of $249.00)."
        wait_until(
            lambda: Approval.objects.filter(pk=approval.pk, outcome__isnull=False).exists(),
            timeout=TIMEOUT_MS / 1000,
            message="the run never recorded the outcome",
        )
        review.goto(self.url("/review/?status=approved"))
        row = review.locator(f'#pending-rows tr[data-approval-id="{approval.pk}"]')
        expect(row.locator(".status")).to_have_text(failed)
        expect(review.get_by_role("heading", level=1)).to_have_text("Approvals: approved", use_inner_text=True)
        expect(review.locator("#bulk-approve")).to_be_hidden()
        self.screenshot(review, "failed-outcome-queue")
        review.goto(self.url(f"/review/{approval.pk}/"))
        expect(review.locator("#approval-status")).to_have_text(failed)

    def test_the_review_page_shows_the_previews_warning_before_anything_else(self):
        OrderFactory(number="B-2001", customer=UserFactory(username="bob"), description="Desk", total="520.00")
        (approval,) = self.ask("refund order B-2001, $150", approvals=1)
        review = self.open_review(approval)

        warning = "Order B-2001 is not this customer's order: the refund will fail."
        expect(review.locator("#preview-warnings li")).to_have_text([warning])
        facts = review.locator(".preview-facts")
        expect(facts).to_contain_text("Total$520.00")
        expect(facts).to_contain_text("Refunded so far$0.00")
        expect(facts).to_contain_text("Left to refund$520.00")
        expect(facts).to_contain_text("Belongs to requesterno")
        # Warnings come first: before the facts, and before the reason and the arguments.
        order = review.locator("#preview-warnings, .preview-facts, #reason-heading, #approval-args").evaluate_all(
            "nodes => nodes.map(n => n.id || n.className)"
        )
        assert order == ["preview-warnings", "facts preview-facts", "reason-heading", "approval-args"]
        assert review.locator("#preview-warnings").is_visible()
        box = review.locator("#preview-warnings").bounding_box()
        assert box is not None
        assert box["y"] + box["height"] <= 900, "the warning must be seen without scrolling"
        self.screenshot(review, "preview-review")

        review.get_by_label("Reason").fill("That is not your order.")
        review.get_by_role("button", name="Reject").click()
        expect(self.page.locator("li.turn").last.locator(".bubble.agent .text")).to_have_text(
            "That didn't go through. Refund was not approved. Reviewer's reason: That is not your order."
        )
        assert not Refund.objects.exists()
