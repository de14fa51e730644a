"""A standing grant in real browsers with a real Celery worker: Rita approves Alice's refund and
grants her later refunds on that order; Alice's next refund runs without review, and Rita reads
"Approved by grant #G from rita" on its page.

Set ``ANVIA_SCREENSHOT_DIR`` (e.g. ``/tmp``) to keep screenshots of both pages.
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
from approvals.models import Approval, Grant
from shop.models import Refund
from tests.factories import PASSWORD, OrderFactory, ReviewerFactory, UserFactory
from tests.support.live_server import LiveServerWithWorkerTestCase
from tests.support.waiting import wait_until

TIMEOUT_MS = 15_000


@pytest.mark.browser
@pytest.mark.redis
@override_settings(ANVIA_APPROVAL_BLOCK_SECONDS=30)
class GrantsInBrowserTests(LiveServerWithWorkerTestCase):
    @pytest.fixture(autouse=True)
    def use_pages(self, page: Page, browser: Browser):
        page.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        page.set_viewport_size({"width": 1280, "height": 900})
        self.page = page
        reviewer_context = browser.new_context(viewport={"width": 1280, "height": 1000})
        self.reviewer_page = reviewer_context.new_page()
        self.reviewer_page.set_default_timeout(TIMEOUT_MS)
        yield
        reviewer_context.close()

    def setUp(self):
        self.alice = UserFactory(username="alice")
        OrderFactory(number="A-1001", customer=self.alice, description="Espresso machine", total="249.00")
        self.reviewer = ReviewerFactory(username="rita")

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
            page.screenshot(path=str(Path(folder) / f"grant-{name}.png"), full_page=True)

    def send(self, text: str) -> None:
        self.page.get_by_label("Your message").fill(text)
        self.page.get_by_role("button", name="Send").click()
        expect(self.page.locator("li.turn").last.locator(".bubble.customer .text")).to_have_text(text)

    def answer(self):
        return self.page.locator("li.turn").last.locator(".bubble.agent .text")

    def runs_finished(self, count: int) -> list[AgentRun]:
        return wait_until(
            lambda: (
                (runs := list(AgentRun.objects.filter(status__in=AgentRun.FINISHED))) and len(runs) == count and runs
            ),
            timeout=TIMEOUT_MS / 1000,
            message=f"{count} runs never finished",
        )

    def test_a_grant_lets_the_next_refund_run_without_review_and_says_so(self):
        page, review = self.page, self.reviewer_page
        self.log_in(review, self.reviewer, "/review/")
        expect(review.locator("#live-status")).to_have_attribute("data-state", "live")
        self.log_in(page, self.alice, "/chat/")
        page.get_by_role("button", name="New conversation").click()
        expect(page.locator("#live-status")).to_have_attribute("data-state", "live")

        self.send("refund order A-1001, $150")
        expect(review.locator("#pending-rows tr")).to_have_count(1)
        first = Approval.objects.get()
        review.get_by_role("link", name=f"Review #{first.pk}").click()
        expect(review).to_have_url(self.url(f"/review/{first.pk}/"))

        review.locator("#grant-terms summary").click()
        review.get_by_label("For how many hours (at most 720)").fill("24")
        # Typing a term ticks "Give this grant"; nothing typed is dropped silently.
        expect(review.get_by_label("Give this grant when I approve")).to_be_checked()
        review.get_by_label("For how many calls (at most 100)").fill("2")
        review.get_by_label("Up to a total amount of ($)").fill("100")
        expect(review.locator('input[name="grant_match"][value="order_id"]')).to_be_checked()
        self.screenshot(review, "give")
        review.get_by_role("button", name="Approve").click()
        expect(review).to_have_url(self.url("/review/"))
        grant = Grant.objects.get()
        expect(review.locator(".messages")).to_contain_text(
            f"Approved #{first.pk} refund_order. Granted #{grant.pk} to alice."
        )
        expect(self.answer()).to_have_text(re.compile(r"^Done: I refunded \$150\.00 for order A-1001"))
        self.runs_finished(1)

        # Alice's next refund on the order: no reviewer is asked; it is made at once.
        self.send("refund order A-1001, $40")
        expect(self.answer()).to_have_text(re.compile(r"^Done: I refunded \$40\.00 for order A-1001"))
        self.screenshot(page, "chat")
        self.runs_finished(2)
        second = Approval.objects.exclude(pk=first.pk).get()
        assert (second.status, second.grant_id, second.decided_by) == ("approved", grant.pk, None)
        assert sorted(Refund.objects.values_list("amount", flat=True)) == [Decimal("40.00"), Decimal("150.00")]
        expect(review.locator("#pending-rows tr")).to_have_count(0)

        review.goto(self.url(f"/review/{second.pk}/"))
        expect(review.locator("#approved-by-grant")).to_have_text(
            f"Approved by grant #{grant.pk} from rita, without review."
        )
        expect(review.locator("#approval-status")).to_have_text(re.compile(r"^Approved — refund RF-\d+$"))
        self.screenshot(review, "approved-by-grant")

        # The grants page: one use and $60.00 left; revoked, it covers nothing more.
        review.get_by_role("link", name=f"grant #{grant.pk}").click()
        row = review.locator(f"#grant-{grant.pk}")
        expect(row).to_contain_text("1 of 2")
        expect(row).to_contain_text("$60.00 of $100.00")
        self.screenshot(review, "list")
        review.get_by_role("button", name=f"Revoke grant #{grant.pk}").click()
        expect(review.locator(".messages")).to_contain_text(f"Revoked grant #{grant.pk}: it covers no more calls.")
        expect(review.locator(f"#grant-{grant.pk}")).to_contain_text("Revoked by rita")

        # Revoked: Alice's next refund waits for a reviewer again.
        self.send("refund order A-1001, $10")
        review.goto(self.url("/review/"))
        expect(review.locator("#pending-rows tr")).to_have_count(1)
        third = Approval.objects.get(status="pending")
        assert third.grant_id is None
        review.get_by_role("link", name=f"Review #{third.pk}").click()
        review.get_by_label("Reason").fill("No more refunds on this order.")
        review.get_by_role("button", name="Reject").click()
        expect(self.answer()).to_contain_text("Reviewer's reason: No more refunds on this order.")
        self.runs_finished(3)
