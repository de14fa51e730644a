"""Triage in a real browser: keyboard only, live decisions by others, and a phone's layout.

Set ``ANVIA_SCREENSHOT_DIR`` (e.g. ``/tmp``) to keep screenshots of the pages at 1280 and 390 px.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from approvals.models import Approval
from approvals.services import approval_decide
from tests.browser.test_review_queue import in_another_thread, request_approval
from tests.factories import PASSWORD, AdminFactory, ReviewerFactory, UserFactory
from tests.support.live_server import LiveServerTestCase

TIMEOUT_MS = 10_000
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
REFUND_SCHEMA = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "maxLength": 20},
        "amount": {"type": "number", "exclusiveMinimum": 0, "description": "The amount to refund, in dollars."},
    },
    "required": ["order_id", "amount"],
}
NO_HORIZONTAL_SCROLL = "() => document.documentElement.scrollWidth <= window.innerWidth"


@pytest.mark.browser
class ReviewTriageInBrowserTests(LiveServerTestCase):
    @pytest.fixture(autouse=True)
    def use_browser(self, browser: Browser) -> None:
        self.browser = browser
        expect.set_options(timeout=TIMEOUT_MS)

    def new_page(self, viewport: dict = DESKTOP) -> Page:
        context = self.browser.new_context(viewport=viewport)
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

    def screenshot(self, page: Page, name: str) -> None:
        folder = os.environ.get("ANVIA_SCREENSHOT_DIR")
        if folder:
            page.screenshot(path=str(Path(folder) / f"triage-{name}.png"), full_page=True)

    def keys_ready(self, page: Page) -> None:
        expect(page.locator("html")).to_have_attribute("data-keys", "ready")

    def requests(self, n: int, requester=None) -> list[Approval]:
        requester = requester or UserFactory(username="carol")
        return [
            request_approval(
                requester=requester,
                call_id=f"call_{i}",
                args={"order_id": f"A-10{i:02d}", "amount": 100.0 + i},
                reason=f"Review refund of ${100 + i:.2f} for A-10{i:02d}.",
                input_schema=REFUND_SCHEMA,
            )
            for i in range(n)
        ]

    def test_keyboard_only_triage_open_approve_next(self):
        first, second, third = self.requests(3)
        page = self.new_page()
        self.log_in(page, ReviewerFactory(username="rita"))
        expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
        expect(page).to_have_title("(3) Review queue · Anvia")
        self.keys_ready(page)

        # The skip link is the first stop for Tab, and lands on the queue.
        page.keyboard.press("Tab")
        expect(page.locator(":focus")).to_have_text("Skip to the queue")
        page.keyboard.press("Enter")
        page.keyboard.press("Escape")

        page.keyboard.press("j")
        page.keyboard.press("j")
        expect(page.locator("tr.current")).to_have_attribute("data-approval-id", str(second.pk))
        page.keyboard.press("k")
        expect(page.locator("tr.current")).to_have_attribute("data-approval-id", str(first.pk))
        page.keyboard.press("?")
        expect(page.locator("#shortcut-help")).to_be_visible()
        page.keyboard.press("Escape")
        expect(page.locator("#shortcut-help")).to_be_hidden()
        page.keyboard.press("o")
        expect(page).to_have_url(self.url(f"/review/{first.pk}/"))
        self.keys_ready(page)

        page.keyboard.press("a")
        # Approved, and the next pending request opened by itself.
        expect(page).to_have_url(self.url(f"/review/{second.pk}/"))
        self.keys_ready(page)
        expect(page.locator(".messages")).to_contain_text(f"Approved #{first.pk} refund_order.")
        page.keyboard.press("e")
        expect(page.locator("#id_arg__order_id")).to_be_focused()
        page.keyboard.press("Tab")
        expect(page.locator("#id_arg__amount")).to_be_focused()
        page.keyboard.press("Control+a")
        page.keyboard.type("90")
        page.keyboard.press("Tab")  # out of the field (to the next control): keys work again
        page.keyboard.press("r")
        # Rejecting would drop the edit: the page asks first, then a second r rejects.
        expect(page.locator("#decision-error")).to_contain_text("Rejecting drops your edits (amount 101 → 90)")
        self.keys_ready(page)
        page.keyboard.press("r")
        expect(page).to_have_url(self.url(f"/review/{third.pk}/"))
        assert Approval.objects.get(pk=first.pk).status == "approved"
        assert Approval.objects.get(pk=second.pk).status == "rejected"

    def test_the_page_closes_its_form_when_another_reviewer_decides(self):
        (approval,) = self.requests(1)
        page = self.new_page()
        self.log_in(page, ReviewerFactory(username="rita"), then=f"/review/{approval.pk}/")
        expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
        page.get_by_label("Reason").fill("Looks fine")
        self.screenshot(page, "detail-1280")

        in_another_thread(
            approval_decide, approval_id=approval.pk, reviewer=ReviewerFactory(username="bob"), approved=False
        )

        expect(page.locator("#live-decided")).to_contain_text("Decided by bob just now: rejected.")
        expect(page.get_by_role("button", name="Approve")).to_be_disabled()
        expect(page.locator("#approval-status")).to_have_text("Rejected")
        self.screenshot(page, "detail-decided-elsewhere-1280")

    def test_the_detail_page_shows_who_else_is_viewing_it(self):
        (approval,) = self.requests(1)
        rita, bob = self.new_page(), self.new_page()
        self.log_in(rita, ReviewerFactory(username="rita"), then=f"/review/{approval.pk}/")
        expect(rita.locator("#also-viewing")).to_be_hidden()

        self.log_in(bob, ReviewerFactory(username="bob"), then=f"/review/{approval.pk}/")

        expect(bob.locator("#also-viewing")).to_have_text("Also viewing now: rita.")
        # Rita's page hears of bob on its next heartbeat (every 10 s).
        expect(rita.locator("#also-viewing")).to_have_text("Also viewing now: bob.", timeout=15_000)
        # Bob leaves: his page says so as it goes; were that lost, his entry runs out after 30 s.
        bob.goto(self.url("/review/"))
        expect(rita.locator("#also-viewing")).to_be_hidden(timeout=45_000)

    def test_the_queue_sets_own_requests_apart_and_filters(self):
        rita = ReviewerFactory(username="rita")
        (theirs,) = self.requests(1)
        mine = request_approval(requester=rita, call_id="call_mine", args={"order_id": "B-1", "amount": 500.0})
        page = self.new_page()
        self.log_in(page, rita)
        expect(page.locator(f'#pending-rows tr[data-approval-id="{theirs.pk}"] td.amount')).to_have_text("$100")
        expect(page.locator(f'#pending-rows tr[data-approval-id="{theirs.pk}"] td.customer')).to_have_text("carol")
        expect(page.locator(f'#my-requests tr[data-approval-id="{mine.pk}"]')).to_be_visible()
        expect(page.locator(f'#pending-rows tr[data-approval-id="{mine.pk}"]')).to_have_count(0)
        self.screenshot(page, "queue-1280")
        page.get_by_label("Search").fill("A-1000")
        page.get_by_role("button", name="Apply").click()
        expect(page.locator("#pending-rows tr")).to_have_count(1)

    def test_a_phone_gets_cards_and_the_form_near_the_top(self):
        approvals = self.requests(3)
        page = self.new_page(PHONE)
        self.log_in(page, ReviewerFactory(username="rita"))
        expect(page.locator("#pending-rows tr")).to_have_count(3)
        assert page.evaluate(NO_HORIZONTAL_SCROLL)
        self.screenshot(page, "queue-390")

        page.goto(self.url(f"/review/{approvals[0].pk}/"))
        assert page.evaluate(NO_HORIZONTAL_SCROLL)
        approve = page.get_by_role("button", name="Approve")
        box = approve.bounding_box()
        assert box is not None
        assert box["y"] + box["height"] <= PHONE["height"], box
        # The form comes before the run and call ids.
        ids = page.get_by_text(approvals[0].run_id, exact=True).bounding_box()
        assert ids is not None
        assert box["y"] < ids["y"]
        self.screenshot(page, "detail-390")

    def test_admin_pages_at_1280_and_390(self):
        approval, _ = self.requests(2)
        in_another_thread(
            approval_decide, approval_id=approval.pk, reviewer=ReviewerFactory(username="bob"), approved=True
        )
        page = self.new_page()
        self.log_in(page, AdminFactory(username="root"), then="/admin/approvals/approval/")
        decided_by = page.locator("th.column-decider")
        expect(decided_by).to_be_visible()
        # Nothing of the table is cut off or scrolled away at 1280 px.
        results = page.locator("div.results")
        assert results.evaluate("(box) => box.scrollWidth <= box.clientWidth")
        box, frame = decided_by.bounding_box(), results.bounding_box()
        assert box is not None
        assert frame is not None
        assert box["x"] + box["width"] <= frame["x"] + frame["width"], (box, frame)
        reason = page.locator("td.field-reason_preview").first.bounding_box()
        assert reason is not None
        assert reason["width"] >= 150, reason
        expect(page.locator("td.field-status_badge").first).to_contain_text("Pending")
        self.screenshot(page, "admin-list-1280")
        page.goto(self.url(f"/admin/approvals/approval/{approval.pk}/change/"))
        expect(page.locator("#content")).to_contain_text("Approved — not run yet")
        self.screenshot(page, "admin-detail-1280")
        page.set_viewport_size(PHONE)
        page.goto(self.url("/admin/approvals/approval/"))
        self.screenshot(page, "admin-list-390")
