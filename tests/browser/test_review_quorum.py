"""Two reviewers approve a $900 refund in real browsers: the first reads "1 of 2 approvals", the
second sees that live in the queue (with who approved), and only the second approval decides it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from approvals.models import Approval
from tests.browser.test_review_queue import TIMEOUT_MS, request_approval
from tests.factories import PASSWORD, ReviewerFactory, UserFactory
from tests.support.live_server import LiveServerTestCase


@pytest.mark.browser
class QuorumInBrowserTests(LiveServerTestCase):
    @pytest.fixture(autouse=True)
    def use_browser(self, browser: Browser) -> None:
        self.browser = browser
        expect.set_options(timeout=TIMEOUT_MS)

    def new_page(self) -> Page:
        context = self.browser.new_context(viewport={"width": 1280, "height": 800})
        self.addCleanup(context.close)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        return page

    def url(self, path: str) -> str:
        return self.live_server_url + path

    def log_in(self, page: Page, user, then: str = "/review/") -> None:
        page.goto(self.url(f"/accounts/login/?next={then}"))
        page.get_by_label("Username").fill(user.get_username())
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(self.url(then))
        expect(page.locator("#live-status")).to_have_attribute("data-state", "live")

    def screenshot(self, page: Page, name: str) -> None:
        folder = os.environ.get("ANVIA_SCREENSHOT_DIR")
        if folder:
            page.screenshot(path=str(Path(folder) / f"quorum-{name}.png"), full_page=True)

    def test_two_reviewers_approve_a_900_refund_the_first_reads_one_of_two(self):
        bob, carol = ReviewerFactory(username="bob"), ReviewerFactory(username="carol")
        first, second = self.new_page(), self.new_page()
        self.log_in(first, bob)
        self.log_in(second, carol)

        approval = request_approval(
            requester=UserFactory(username="alice"),
            call_id="call_900",
            args={"order_id": "A-1004", "amount": 900.0},
            reason="Refund $900.00 of order A-1004 (two reviewers: over $500).",
            quorum=2,
        )
        row = f'#pending-rows tr[data-approval-id="{approval.pk}"]'
        for page in (first, second):
            expect(page.locator(row + " td.status-cell")).to_have_text("0 of 2 approvals")

        first.locator(row).get_by_role("link", name=f"Review #{approval.pk}").click()
        expect(first.locator("#quorum-note")).to_contain_text("2 different reviewers must approve it")
        first.get_by_role("button", name="Approve").click()
        expect(first.locator(".messages")).to_contain_text(f"Approved #{approval.pk} refund_order: 1 of 2 approvals.")

        # Carol's queue hears it live: still pending, with who approved.
        expect(second.locator(row + " td.status-cell")).to_have_text("1 of 2 approvals approved by bob")
        self.screenshot(second, "queue-one-of-two")
        assert Approval.objects.get(pk=approval.pk).status == Approval.Status.PENDING

        second.locator(row).get_by_role("link", name=f"Review #{approval.pk}").click()
        expect(second.locator("#approvers")).to_contain_text("bob (1 of 2 needed)")
        self.screenshot(second, "detail-one-of-two")
        second.get_by_role("button", name="Approve").click()
        expect(second.locator(".messages")).to_contain_text(f"Approved #{approval.pk} refund_order.")
        decided = Approval.objects.get(pk=approval.pk)
        assert (decided.status, decided.decided_by, decided.approvers) == ("approved", carol, ["bob", "carol"])
