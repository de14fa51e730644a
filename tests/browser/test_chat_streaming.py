"""The answer appears in the chat as it is written: a real browser, a real Celery worker, the
offline model streaming word by word; the pieces arrive over the conversation's websocket and
grow the agent's bubble; the finished answer replaces it, and a reload shows the whole answer.

Set ``ANVIA_SCREENSHOT_DIR`` (e.g. ``/tmp``) to keep screenshots of the page while it streams.
"""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path

import pytest
from django.test import override_settings
from playwright.sync_api import Page, expect

from agents.models import AgentRun, RunEvent
from agents.support import support_agent
from tests.factories import PASSWORD, UserFactory
from tests.support.live_server import LiveServerWithWorkerTestCase

TIMEOUT_MS = 15_000
WORD_DELAY = 0.12

# Every text the agent's bubble shows, with whether the run was still going, in order.
WATCH_THE_BUBBLE = """() => {
  window.__seen = [];
  const turns = document.getElementById("turns");
  new MutationObserver(() => {
    const turn = turns.lastElementChild;
    const bubble = turn && turn.querySelector(".bubble.agent .text");
    if (!bubble) return;
    const draft = bubble.parentElement.classList.contains("draft");
    const seen = { text: bubble.textContent, draft, status: turn.dataset.status };
    const last = window.__seen[window.__seen.length - 1];
    if (!last || last.text !== seen.text || last.draft !== seen.draft) window.__seen.push(seen);
  }).observe(turns, { childList: true, subtree: true, characterData: true });
}"""


@pytest.mark.browser
@pytest.mark.redis
@override_settings(ANVIA_OFFLINE_WORD_DELAY_SECONDS=WORD_DELAY)
class ChatStreamingInBrowserTests(LiveServerWithWorkerTestCase):
    worker_concurrency = 2

    @pytest.fixture(autouse=True)
    def use_page(self, page: Page):
        page.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        self.page = page
        # The settings model is built once per process: rebuild it with this class's word delay.
        support_agent.model.__dict__.pop("client", None)
        yield
        support_agent.model.__dict__.pop("client", None)

    def screenshot(self, name: str) -> None:
        folder = os.environ.get("ANVIA_SCREENSHOT_DIR")
        if folder:
            self.page.screenshot(path=str(Path(folder) / f"chat-streaming-{name}.png"), full_page=True)

    def test_the_answer_grows_word_by_word_then_stays_whole_after_a_reload(self):
        page = self.page
        alice = UserFactory(username="alice")
        page.goto(f"{self.live_server_url}/accounts/login/?next=/chat/")
        page.get_by_label("Username").fill(alice.get_username())
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.get_by_role("button", name="New conversation").click()
        expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
        page.evaluate(WATCH_THE_BUBBLE)

        page.get_by_label("Your message").fill("hello")
        page.get_by_role("button", name="Send").click()

        turn = page.locator("li.turn").last
        draft = turn.locator(".bubble.agent.draft .text")
        # Part of the answer is on the page while the model is still writing the rest.
        expect(draft).to_have_text(re.compile(r"^Hello! I'm the offline demo model \(no"))
        assert turn.get_attribute("data-status") not in ("succeeded", "failed", "stopped")
        self.screenshot("writing")

        answer = turn.locator(".bubble.agent:not(.draft) .text")
        expect(answer).to_have_text(re.compile(r"^Hello! I'm the offline demo model .*Try .*\.$"))
        expect(turn.locator(".bubble.agent.draft")).to_have_count(0)
        expect(turn.locator(".run-status")).to_be_hidden()
        whole = answer.text_content()
        self.screenshot("written")

        seen = page.evaluate("window.__seen")
        drafts = [s["text"] for s in seen if s["draft"]]
        words = len(whole.split())
        # One word at a time (a few may land in one frame), each a longer start of the answer.
        assert len(drafts) >= words // 2, drafts
        assert drafts[0] == "Hello! "
        assert all(whole.startswith(text) for text in drafts)
        assert all(len(a) < len(b) for a, b in itertools.pairwise(drafts))
        assert all(s["status"] not in ("succeeded", "failed", "stopped") for s in seen if s["draft"])
        assert seen[-1] == {"text": whole, "draft": False, "status": "succeeded"}

        page.reload()
        expect(page.locator("li.turn").last.locator(".bubble.agent .text")).to_have_text(whole)
        run = AgentRun.objects.get()
        assert run.status == AgentRun.Status.SUCCEEDED
        assert not RunEvent.objects.filter(run=run, type="text_delta").exists()
