"""Studio in a real browser: ``scripts/studio.py`` in its own process, approving and rejecting a refund."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.studio.server_process import StudioProcess, seeded_database

TIMEOUT_MS = 15_000
SCRIPT = "<script>window.__xss=1</script>"
IMG = '<img src=x onerror="window.__xss=1">'
NO_INJECTED_MARKUP = """() => ({
  xss: typeof window.__xss,
  scripts: [...document.scripts].filter((s) => s.text.includes("__xss")).length,
  images: document.querySelectorAll('img[src="x"]').length,
  handlers: document.querySelectorAll("[onerror]").length,
})"""
SAFE = {"xss": "undefined", "scripts": 0, "images": 0, "handlers": 0}


@pytest.fixture
def studio(tmp_path_factory, tmp_path) -> Iterator[StudioProcess]:
    process = StudioProcess(seeded_database(tmp_path_factory, tmp_path))
    try:
        yield process
    finally:
        process.kill()


@pytest.fixture
def studio_page(page: Page, studio: StudioProcess) -> Page:
    page.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    page.set_viewport_size({"width": 1440, "height": 900})
    page.goto(studio.url)
    # "live" once the event stream is open and the first read is in.
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    return page


SECOND_REASON = "Review refund of $90.00 for A-1001: $150.00 of $249.00 already refunded in 1 call in the last 30 days."


def ask(page: Page, agent: str, message: str) -> None:
    page.locator(f'button.agent[data-agent="{agent}"]').click()
    expect(page.locator("#chat-title")).to_have_text(f"New chat with {agent}")
    page.get_by_label("Message").fill(message)
    page.get_by_label("Message").press("Enter")
    expect(page.locator("#timeline .turn").last.locator(".from-user")).to_contain_text(message)


def test_approving_and_rejecting_a_refund_in_studio(studio_page: Page, studio: StudioProcess):
    page = studio_page
    timeline = page.locator("#timeline")
    expect(page.locator("#act-as option:checked")).to_have_text("alice")

    # Approve: the tool runs and the agent answers.
    ask(page, "support", "refund order A-1001, $150")
    card = page.locator("#pending li.approval-card")
    expect(card).to_have_count(1)
    expect(card).to_contain_text("Review refund of $150.00 for A-1001.")
    expect(card.locator("pre.args")).to_contain_text('"order_id": "A-1001"')
    expect(card.locator("pre.args")).to_contain_text('"amount": 150')
    expect(card).to_contain_text("asked by alice")
    expect(page.locator("#approval-count")).to_have_text("1")
    expect(timeline.locator(".event-approval")).to_contain_text("Review refund of $150.00 for A-1001.")
    expect(timeline.locator(".progress.waiting")).to_contain_text("Waiting for approval")
    expect(page.locator("#send")).to_be_disabled()
    page.screenshot(path="/tmp/studio-1-pending.png", full_page=True)

    card.get_by_label("Reason (optional)").fill("Customer is eligible.")
    card.get_by_role("button", name="Approve").click()
    expect(timeline.locator(".from-agent")).to_contain_text("Done: I refunded $150.00 for order A-1001")
    expect(timeline.locator(".event-result pre.result")).to_contain_text('"refund_id": "RF-')
    expect(timeline.locator(".event-decided.approved")).to_contain_text("approved by studio: “Customer is eligible.”")
    expect(page.locator("#pending li")).to_have_count(0)
    expect(page.locator("#approval-count")).to_have_text("0")
    expect(page.locator("#recent li").first).to_contain_text("approved")
    page.screenshot(path="/tmp/studio-2-approved.png", full_page=True)

    # Reject, in a second chat: the model hears the reject message and the reason.
    ask(page, "support", "refund order A-1001, $90")
    card = page.locator("#pending li.approval-card")
    expect(card).to_contain_text(SECOND_REASON)  # the policy counts the first refund
    card.get_by_label("Reason (optional)").fill("Only $99.00 is left to refund on this order.")
    card.get_by_role("button", name="Reject").click()
    received = "Refund was not approved. Reviewer's reason: Only $99.00 is left to refund on this order."
    expect(timeline.locator(".model-received")).to_have_text(received)
    expect(timeline.locator(".from-agent")).to_contain_text(f"That didn't go through. {received}")
    expect(timeline.locator(".event-decided.rejected")).to_contain_text("rejected by studio")
    expect(page.locator("#chats li")).to_have_count(2)
    page.screenshot(path="/tmp/studio-3-rejected.png", full_page=True)

    # The first chat is still there, with its answer.
    page.locator("#chats button.chat-link", has_text="refund order A-1001, $150").click()
    expect(timeline.locator(".from-agent")).to_contain_text("Done: I refunded $150.00 for order A-1001")

    # What Studio recorded is the app's own rows.
    assert studio.query(
        "select a.status, a.reason, u.username, a.decision_reason from approvals_approval a"
        " join auth_user u on u.id = a.decided_by_id order by a.id"
    ) == [
        ("approved", "Review refund of $150.00 for A-1001.", "studio", "Customer is eligible."),
        ("rejected", SECOND_REASON, "studio", "Only $99.00 is left to refund on this order."),
    ]
    assert studio.query("select count(*) from shop_refund") == [(1,)]
    assert studio.stop(signal.SIGINT) == 0


def test_text_from_users_and_models_stays_text(studio_page: Page, studio: StudioProcess):
    page = studio_page
    ask(page, "support", f"hello {SCRIPT} {IMG}")
    answer = page.locator("#timeline .from-agent")
    expect(answer).to_contain_text("offline demo model")
    expect(page.locator("#timeline .from-user .text")).to_have_text(f"hello {SCRIPT} {IMG}")
    assert page.evaluate(NO_INJECTED_MARKUP) == SAFE
    page.reload()
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    page.locator("#chats button.chat-link").first.click()
    expect(page.locator("#timeline .from-user .text")).to_have_text(f"hello {SCRIPT} {IMG}")
    assert page.evaluate(NO_INJECTED_MARKUP) == SAFE


def test_respond_and_stop_the_run_in_studio_with_the_preview_shown(studio_page: Page, studio: StudioProcess):
    page = studio_page
    timeline = page.locator("#timeline")

    # Two refunds of one order in one step: both wait at once, each card with its preview, warnings first.
    ask(page, "support", "refund order A-1001, $150 and order A-1001, $120")
    cards = page.locator("#pending li.approval-card")
    expect(cards).to_have_count(2)
    expect(page.locator("#approval-count")).to_have_text("2")
    first = cards.filter(has_text="Review refund of $150.00 for A-1001.")
    second = cards.filter(has_text="Review refund of $120.00 for A-1001.")
    warning = (
        "With the 1 other pending request(s) for A-1001 ($150.00), more than the $249.00 left would be refunded: "
        "approving all of them cannot succeed."
    )
    expect(second.locator(".preview-warnings li")).to_have_text([warning])
    expect(second.locator(".preview-facts")).to_contain_text("Left to refund$249.00")
    assert second.locator(".preview > *").evaluate_all("nodes => nodes.map(n => n.className)") == [
        "preview-warnings",
        "preview-facts",
    ]
    expect(first.locator(".preview-warnings")).to_have_count(0)
    expect(first.locator(".preview-facts")).to_contain_text("Belongs to requesteryes")
    expect(timeline.locator(".event-approval .preview-warnings")).to_have_text([warning])
    page.screenshot(path="/tmp/studio-4-two-pending.png", full_page=True)

    # Respond needs words; then the model gets them instead of the tool's result.
    second.get_by_role("button", name="Respond").click()
    must_write = "Write what the model should receive instead of the tool's result."
    expect(second.locator(".form-error")).to_have_text(must_write)
    answer = "Only $99.00 more could go back on A-1001; a store credit covers the rest."
    second.get_by_label("What the model receives instead of the tool's result").fill(answer)
    page.screenshot(path="/tmp/studio-5-respond.png", full_page=True)
    second.get_by_role("button", name="Respond").click()
    expect(cards).to_have_count(1)
    expect(timeline.locator(".progress.waiting")).to_contain_text("Waiting for approval")
    first.get_by_role("button", name="Approve").click()

    expect(timeline.locator(".from-agent")).to_contain_text("Done: I refunded $150.00 for order A-1001")
    expect(timeline.locator(".from-agent")).to_contain_text(answer)
    expect(timeline.locator(".event-decided.responded")).to_contain_text(
        f"answered instead of the tool by studio: “{answer}”"
    )
    expect(timeline.locator(".event-result.responded .model-received")).to_have_text(answer)
    expect(page.locator('#recent li[data-action="respond"]')).to_contain_text(f"The model received: “{answer}”")
    page.screenshot(path="/tmp/studio-6-responded.png", full_page=True)

    # Stop the run: it ends "stopped", says why, and nothing runs.
    ask(page, "support", "refund order A-1001, $90")
    card = page.locator("#pending li.approval-card")
    expect(card).to_have_count(1)
    card.get_by_label("Reason (optional)").fill("This account is under review.")
    card.get_by_role("button", name="Stop the run").click()
    expect(timeline.locator(".event-decided.terminated")).to_contain_text("run stopped by studio")
    expect(timeline.locator(".event-stopped")).to_contain_text("This account is under review.")
    expect(page.locator("#chat-meta .badge")).to_have_text("stopped")
    expect(page.locator("#chats li").first.locator(".badge")).to_have_text("stopped")
    expect(timeline.locator(".from-agent")).to_have_count(0)
    expect(page.get_by_label("Message")).to_be_enabled()  # a stopped chat takes the next message
    page.screenshot(path="/tmp/studio-7-stopped.png", full_page=True)

    assert studio.query("select a.action, a.status, a.response from approvals_approval a order by a.id") == [
        ("approve", "approved", ""),
        ("respond", "rejected", answer),
        ("terminate", "rejected", ""),
    ]
    assert studio.query("select count(*) from shop_refund") == [(1,)]
    assert studio.stop(signal.SIGINT) == 0
