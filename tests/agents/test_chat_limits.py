"""Limits on chat (issue 9, item 6): messages per minute (429 + Retry-After), one open run per
conversation (409), on the API and the chat page alike."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from rest_framework.test import APIClient

from agents.models import AgentRun
from agents.services import ConversationBusy, conversation_create, conversation_post_message

pytestmark = pytest.mark.django_db

BUSY = "The agent is still answering your last message."


def post_message(api: APIClient, conversation_id: int, content: str = "where is my order A-1001?"):
    return api.post(f"/api/conversations/{conversation_id}/messages/", {"content": content}, format="json")


# ---- messages per minute -------------------------------------------------------------------


def test_the_default_limit_answers_429_with_retry_after_past_10_messages_a_minute(alice_api, alice, queued, settings):
    assert settings.ANVIA_CHAT_MESSAGES_PER_MINUTE == 10  # the real default, not a test override
    conversations = [conversation_create(user=alice) for _ in range(11)]

    answers = [post_message(alice_api, conversation.pk) for conversation in conversations]

    assert [answer.status_code for answer in answers] == [202] * 10 + [429]
    refused = answers[-1]
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert refused.json()["detail"].startswith("You are sending messages too quickly. Wait ")
    assert f"Wait {refused['Retry-After']} second" in refused.json()["detail"]
    assert AgentRun.objects.count() == 10


def test_the_limit_is_per_customer(alice_api, alice, bob, api_for, queued, settings):
    settings.ANVIA_CHAT_MESSAGES_PER_MINUTE = 1
    bobs_api = api_for(bob)

    assert post_message(alice_api, conversation_create(user=alice).pk).status_code == 202
    assert post_message(alice_api, conversation_create(user=alice).pk).status_code == 429
    assert post_message(bobs_api, conversation_create(user=bob).pk).status_code == 202


def test_the_chat_page_shares_the_count_and_explains_the_wait(alice_api, client, alice, queued, settings):
    settings.ANVIA_CHAT_MESSAGES_PER_MINUTE = 2
    client.force_login(alice)
    assert post_message(alice_api, conversation_create(user=alice).pk).status_code == 202
    first = conversation_create(user=alice)
    assert client.post(f"/chat/{first.pk}/", {"content": "hello"}).status_code == 302
    second = conversation_create(user=alice)

    page = client.post(f"/chat/{second.pk}/", {"content": "where is my order?"})

    assert page.status_code == 429
    assert 1 <= int(page["Retry-After"]) <= 60
    text = page.content.decode()
    assert "You are sending messages too quickly. Wait " in text
    assert "where is my order?</textarea>" in text  # kept in the form
    assert not second.runs.exists()


# ---- one open run per conversation ---------------------------------------------------------


@pytest.mark.parametrize("status", ["queued", "running", "waiting_for_approval", "suspended"])
def test_a_second_message_while_the_run_is_open_is_a_409(alice_api, alice, queued, status):
    conversation = conversation_create(user=alice)
    first = post_message(alice_api, conversation.pk)
    assert first.status_code == 202
    AgentRun.objects.filter(pk=first.json()["run_id"]).update(status=status)

    second = post_message(alice_api, conversation.pk, "and cancel order A-1003")

    assert second.status_code == 409
    assert second.json() == {
        "detail": (
            "The agent is still answering your last message. Wait for its answer before sending another, "
            "or start a new conversation."
        ),
        "code": "conversation_busy",
        "run_id": first.json()["run_id"],
    }
    assert conversation.runs.count() == 1
    assert conversation.messages.count() == 1


@pytest.mark.parametrize("status", ["succeeded", "failed"])
def test_once_the_run_has_finished_the_next_message_is_accepted(alice_api, alice, queued, status):
    conversation = conversation_create(user=alice)
    first = post_message(alice_api, conversation.pk)
    AgentRun.objects.filter(pk=first.json()["run_id"]).update(status=status)

    assert post_message(alice_api, conversation.pk, "thanks").status_code == 202
    assert conversation.runs.count() == 2


def test_the_chat_page_says_the_agent_is_still_answering(client, alice, queued):
    conversation = conversation_create(user=alice)
    client.force_login(alice)
    assert client.post(f"/chat/{conversation.pk}/", {"content": "hello"}).status_code == 302

    page = client.post(f"/chat/{conversation.pk}/", {"content": "hello again"})

    assert page.status_code == 409
    assert BUSY in page.content.decode()
    assert "hello again</textarea>" in page.content.decode()
    assert conversation.runs.count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_messages_posted_at_once_open_one_run(alice, queued):
    conversation = conversation_create(user=alice)
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def post(text: str) -> None:
        start.wait()
        try:
            conversation_post_message(conversation=conversation, content=text)
            outcomes.append("posted")
        except ConversationBusy:
            outcomes.append("busy")
        finally:
            connection.close()

    threads = [threading.Thread(target=post, args=(text,)) for text in ("one", "two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(outcomes) == ["busy", "posted"]
    assert conversation.runs.count() == 1
