"""The chat pages: who may see what, the history as it renders, and posting without JavaScript."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from agents.models import AgentRun, Conversation, Message
from agents.services import conversation_create, conversation_post_message, run_execute
from approvals.models import Approval
from approvals.services import approval_decide
from tests.factories import (
    AgentRunFactory,
    ConversationFactory,
    MessageFactory,
    ReviewerFactory,
    RunEventFactory,
    UserFactory,
)

SCRIPT = "<script>window.__xss=1</script>"


def detail_url(conversation: Conversation) -> str:
    return reverse("chat:detail", args=[conversation.pk])


def page_text(response) -> str:
    """The page's visible words, tags and scripts dropped and whitespace squeezed, still HTML-escaped."""
    html = re.sub(r"<script\b.*?</script>", " ", response.content.decode(), flags=re.DOTALL)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path"),
    [("get", "/chat/"), ("post", "/chat/new/"), ("get", "/chat/1/"), ("post", "/chat/1/")],
)
def test_the_chat_needs_a_login(client, method, path):
    response = getattr(client, method)(path)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={path}"


@pytest.mark.django_db
def test_the_list_shows_only_my_conversations_most_recent_first(client, alice):
    older = conversation_create(user=alice, title="Where is my grinder?")
    newer = conversation_create(user=alice, title="Refund please")
    conversation_create(user=UserFactory(), title="Bob's secret")
    client.force_login(alice)

    response = client.get("/chat/")

    assert response.status_code == 200
    assert [conversation for conversation, *_ in response.context["conversations"]] == [newer, older]
    html = response.content.decode()
    assert html.index("Refund please") < html.index("Where is my grinder?")
    assert "Bob&#x27;s secret" not in html
    assert 'action="/chat/new/"' in html
    assert "New conversation" in html


@pytest.mark.django_db
def test_new_conversation_is_a_post_that_opens_it(client, alice):
    client.force_login(alice)
    assert client.get("/chat/new/").status_code == 405

    response = client.post("/chat/new/")

    conversation = Conversation.objects.get(user=alice)
    assert response.status_code == 302
    assert response["Location"] == detail_url(conversation)
    page = client.get(response["Location"])
    assert page.status_code == 200
    assert "No messages yet" in page.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "post"])
def test_another_customers_conversation_is_not_found(client, alice, bob, queued, method):
    theirs = conversation_create(user=bob)
    client.force_login(alice)

    response = getattr(client, method)(detail_url(theirs), {"content": "refund order B-2001, $500"})

    assert response.status_code == 404
    assert not Message.objects.exists()
    assert client.get("/chat/999999/").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_posting_without_javascript_queues_a_run_and_comes_back_to_the_page(client, alice, queued):
    conversation = conversation_create(user=alice)
    client.force_login(alice)

    response = client.post(detail_url(conversation), {"content": "  where is my order A-1001?  "})

    assert response.status_code == 302
    assert response["Location"] == detail_url(conversation) + "#chat-form"
    run = AgentRun.objects.get()
    assert queued == [str(run.pk)]
    assert Message.objects.get().content == "where is my order A-1001?"
    page = client.get(detail_url(conversation))
    text = page_text(page)
    assert "where is my order A-1001?" in text
    assert "The agent is working…" in text
    assert f'data-run-id="{run.pk}" data-status="queued"' in page.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("content", "message"),
    [("   ", "The message is empty."), ("x" * 4001, "The message is longer than 4000 characters.")],
)
def test_a_refused_message_is_explained_and_kept_in_the_form(client, alice, queued, content, message):
    conversation = conversation_create(user=alice)
    client.force_login(alice)

    response = client.post(detail_url(conversation), {"content": content})

    assert response.status_code == 400
    html = response.content.decode()
    assert message in html
    assert 'aria-invalid="true"' in html
    assert f">{content}</textarea>" in html
    assert not Message.objects.exists()
    assert queued == []


@pytest.mark.django_db(transaction=True)
def test_the_history_shows_each_run_as_a_timeline_in_plain_words(client, alice, queued, settings):
    settings.ANVIA_APPROVAL_BLOCK_SECONDS = 0  # suspend at once: nobody decides inside run_execute
    conversation = conversation_create(user=alice)
    lookup = conversation_post_message(conversation=conversation, content="where is my order A-1001?")
    run_execute(run_id=lookup.pk)
    refund = conversation_post_message(conversation=conversation, content="refund order A-1001, $150")
    run_execute(run_id=refund.pk)
    client.force_login(alice)

    waiting = page_text(client.get(detail_url(conversation)))
    assert "Checking your order A-1001…" in waiting
    assert "Found order A-1001 (delivered)." in waiting
    assert "Order A-1001 is delivered, total $249.00." in waiting
    assert "Preparing a $150.00 refund for order A-1001…" in waiting
    assert "A staff member needs to approve this $150.00 refund." in waiting
    assert "Paused until a staff member decides" in waiting
    assert "Still waiting for a reviewer. You can leave this page" in waiting

    approval_decide(
        approval_id=Approval.objects.get().pk,
        reviewer=ReviewerFactory(),
        approved=False,
        reason="Already refunded in store",
    )
    run_execute(run_id=refund.pk)

    text = page_text(client.get(detail_url(conversation)))
    steps = [
        "refund order A-1001, $150",
        "Preparing a $150.00 refund for order A-1001…",
        "A staff member needs to approve this $150.00 refund.",
        "Not approved: Refund was not approved. Reviewer&#x27;s reason: Already refunded in store",
        "That didn&#x27;t go through. Refund was not approved. Reviewer&#x27;s reason: Already refunded in store",
    ]
    positions = [text.index(step) for step in steps]
    assert positions == sorted(positions)
    assert "Still waiting for a reviewer" not in text
    assert "The agent is working" not in text
    # The resumed run announced its call again: one line each all the same.
    assert text.count("Preparing a $150.00 refund") == 1
    assert text.count("A staff member needs to approve this $150.00 refund") == 1
    timeline = re.findall(
        r'<ol class="timeline"[^>]*>(.*?)</ol>', client.get(detail_url(conversation)).content.decode(), re.S
    )
    assert not any(word in line for line in timeline for word in ("refund_order", "lookup_order", "{"))


@pytest.mark.django_db
def test_a_failed_run_says_so_in_plain_words(client, alice, queued):
    conversation = conversation_create(user=alice)
    run = conversation_post_message(conversation=conversation, content="hello")
    AgentRun.objects.filter(pk=run.pk).update(status="failed", error="Could not reach http://10.0.0.7:11434/v1")
    RunEventFactory(run=run, type="error", data={"message": "Could not reach", "kind": "ModelUnavailableError"})
    MessageFactory(
        conversation=conversation, run=run, role="assistant", content="Sorry, the assistant is unavailable right now."
    )
    client.force_login(alice)

    response = client.get(detail_url(conversation))

    html = response.content.decode()
    assert "The assistant could not be reached." in html
    assert re.search(r'class="bubble agent failed">\s*<p class="who">Agent</p>\s*<p class="text">Sorry, the', html)
    assert "10.0.0.7" not in html


@pytest.mark.django_db
def test_the_history_escapes_what_customers_and_models_wrote(client, alice, queued):
    conversation = conversation_create(user=alice, title=f"Title {SCRIPT}")
    run = conversation_post_message(conversation=conversation, content=f"Hello {SCRIPT}")
    for event_type, data in [
        ("tool_call", {"tool_name": "refund_order", "args": {"order_id": SCRIPT, "amount": 150.0}}),
        ("approval_requested", {"tool_name": "refund_order", "reason": f"Review {SCRIPT}"}),
        ("approval_decided", {"tool_name": "refund_order", "approved": False, "message": f"No {SCRIPT}"}),
        ("text", {"text": f"Thinking {SCRIPT}", "final": False}),
    ]:
        RunEventFactory(run=run, type=event_type, data=data)
    AgentRun.objects.filter(pk=run.pk).update(status="succeeded")
    MessageFactory(conversation=conversation, run=run, role="assistant", content=f"Answer {SCRIPT}")
    client.force_login(alice)

    html = client.get(detail_url(conversation)).content.decode()

    assert SCRIPT not in html
    assert "window.__xss" in html  # it is there, as text
    # The title twice (<title>, <h1>), the question, three timeline lines and the answer (the
    # reviewer's instruction, the approval's reason, is not the customer's to read).
    assert html.count("&lt;script&gt;window.__xss=1&lt;/script&gt;") == 7
    for shown in [
        "Hello ",
        "Preparing a $150.00 refund for order ",
        "Not approved: No ",
    ]:
        assert f"{shown}&lt;script&gt;" in html
    assert "Answer &lt;script&gt;" in html
    assert "Thinking &lt;script&gt;" in html


@pytest.mark.django_db
def test_each_conversation_in_the_list_shows_its_last_run_s_status(client, alice):
    statuses = {
        "Where is A-1001?": [AgentRun.Status.SUCCEEDED],
        "Refund A-1004": [AgentRun.Status.SUCCEEDED, AgentRun.Status.WAITING_FOR_APPROVAL],
        "Cancel A-1003": [AgentRun.Status.SUSPENDED],
        "Hello": [AgentRun.Status.FAILED],
        "Big refund": [AgentRun.Status.STOPPED],
        "Thinking": [AgentRun.Status.RUNNING],
    }
    for title, runs in statuses.items():
        conversation = ConversationFactory(user=alice, title=title)
        for status in runs:
            AgentRunFactory(user=alice, conversation=conversation, status=status)
    ConversationFactory(user=alice, title="Empty")
    Conversation.objects.filter(title="Empty").update(updated_at=timezone.now() - timedelta(hours=3))
    client.force_login(alice)

    text = page_text(client.get(reverse("chat:index")))

    for title, said in [
        ("Where is A-1001?", "Answered · active just now"),
        ("Refund A-1004", "Waiting for a reviewer · active just now"),
        ("Cancel A-1003", "Waiting for a reviewer · active just now"),
        ("Hello", "Failed · active just now"),
        ("Big refund", "Stopped by a staff member · active just now"),
        ("Thinking", "Working · active just now"),
        ("Empty", "No messages yet · active 3 hours ago"),
    ]:
        assert f"{title} {said}" in text
    assert text.index("Thinking") < text.index("Empty")  # the least recently active last
