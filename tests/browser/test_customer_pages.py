"""The customer's and the reviewer's pages around the chat, in a real browser at 1280 and 390 px:
the home page shows each only what they may use, the conversation list says where each
conversation is, and a message past the limit is refused with a counter, never cut.

Set ``ANVIA_SCREENSHOT_DIR`` (e.g. ``/tmp``) to keep screenshots of every page at both widths.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from agents.models import AgentRun, Message
from tests.factories import PASSWORD, AgentRunFactory, ConversationFactory, OrderFactory, ReviewerFactory, UserFactory
from tests.support.live_server import LiveServerTestCase

TIMEOUT_MS = 15_000
WIDTHS = {"desktop": 1280, "phone": 390}


@pytest.mark.browser
@pytest.mark.redis
class CustomerPagesInBrowserTests(LiveServerTestCase):
    @pytest.fixture(autouse=True)
    def use_browser(self, browser: Browser):
        self.browser = browser
        expect.set_options(timeout=TIMEOUT_MS)

    def setUp(self):
        self.alice = UserFactory(username="alice")
        OrderFactory(number="A-1001", customer=self.alice, description="Espresso machine", total="249.00")
        self.reviewer = ReviewerFactory(username="rita", email="rita@example.com")
        answered = ConversationFactory(user=self.alice, title="where is my order A-1001?")
        run = AgentRunFactory(user=self.alice, conversation=answered, status=AgentRun.Status.SUCCEEDED)
        Message.objects.create(conversation=answered, run=run, role="user", content="where is my order A-1001?")
        Message.objects.create(
            conversation=answered, run=run, role="assistant", content="Order A-1001 is placed, total $249.00."
        )
        waiting = ConversationFactory(user=self.alice, title="refund order A-1001, $150")
        AgentRunFactory(user=self.alice, conversation=waiting, status=AgentRun.Status.SUSPENDED)
        self.answered = answered

    def page_for(self, user, width: int) -> Page:
        context = self.browser.new_context(viewport={"width": width, "height": 800})
        self.addCleanup(context.close)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(self.live_server_url + "/accounts/login/")
        page.get_by_label("Username").fill(user.get_username())
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        return page

    def screenshot(self, page: Page, name: str) -> None:
        folder = os.environ.get("ANVIA_SCREENSHOT_DIR")
        if folder:
            page.screenshot(path=str(Path(folder) / f"customer-pages-{name}.png"), full_page=True)

    def assert_no_horizontal_scroll(self, page: Page) -> None:
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

    def test_a_customer_lands_on_their_conversations_and_sees_where_each_one_is(self):
        for label, width in WIDTHS.items():
            page = self.page_for(self.alice, width)
            expect(page).to_have_url(self.live_server_url + "/chat/")
            rows = page.locator("ol.conversations li")
            expect(rows).to_have_count(2)
            expect(rows.nth(0)).to_contain_text("Waiting for a reviewer")
            expect(rows.nth(1)).to_contain_text("Answered")
            expect(rows.nth(1)).to_contain_text("active")
            self.assert_no_horizontal_scroll(page)
            self.screenshot(page, f"list-customer-{label}")

            page.goto(self.live_server_url + "/")
            expect(page.locator("main")).to_contain_text("Your conversations")
            expect(page.locator("main")).not_to_contain_text("Review queue")
            expect(page.locator("main")).not_to_contain_text("Django admin")
            self.assert_no_horizontal_scroll(page)
            self.screenshot(page, f"home-customer-{label}")

            page.goto(self.live_server_url + f"/chat/{self.answered.pk}/")
            expect(page.locator(".bubble.agent .text")).to_have_text("Order A-1001 is placed, total $249.00.")
            self.assert_no_horizontal_scroll(page)
            self.screenshot(page, f"conversation-customer-{label}")

    def test_a_reviewer_lands_on_the_queue_and_their_home_page_leads_to_their_tools(self):
        for label, width in WIDTHS.items():
            page = self.page_for(self.reviewer, width)
            expect(page).to_have_url(self.live_server_url + "/review/")
            page.goto(self.live_server_url + "/")
            for name in ("Review queue", "Notifications", "Your conversations", "Django admin"):
                expect(page.locator("main").get_by_role("link", name=name)).to_be_visible()
            self.assert_no_horizontal_scroll(page)
            self.screenshot(page, f"home-reviewer-{label}")
            page.goto(self.live_server_url + "/chat/")
            self.screenshot(page, f"list-reviewer-{label}")
            page.goto(self.live_server_url + "/review/settings/")
            expect(page.get_by_label("Email me when a request I may decide is waiting")).to_be_checked()
            self.assert_no_horizontal_scroll(page)
            self.screenshot(page, f"settings-reviewer-{label}")

    def test_a_message_past_the_limit_is_refused_with_a_count_never_cut(self):
        page = self.page_for(self.alice, WIDTHS["phone"])
        page.goto(self.live_server_url + f"/chat/{self.answered.pk}/")
        expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
        box = page.get_by_label("Your message")
        counter = page.locator("#char-count")

        box.fill("x" * 3000)
        expect(counter).to_be_hidden()
        box.fill("x" * 3700)
        expect(counter).to_have_text("3,700 / 4,000")
        box.fill("x" * 5000)
        expect(box).to_have_value("x" * 5000)  # nothing cut
        expect(counter).to_have_text("5,000 / 4,000")
        expect(page.locator("#chat-error")).to_have_text(
            "Your message is 5,000 characters, 1,000 over the 4,000 limit. Shorten it to send."
        )
        self.screenshot(page, "counter-over-phone")
        page.get_by_role("button", name="Send").click()
        expect(page.locator("li.turn")).to_have_count(1)  # the earlier one only: nothing was sent
        assert Message.objects.filter(conversation=self.answered).count() == 2

        box.fill("x" * 3990)
        expect(page.locator("#chat-error")).to_be_hidden()
        expect(counter).to_have_text("3,990 / 4,000")
