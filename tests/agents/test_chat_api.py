"""The conversations and runs API: status codes, error bodies, and nobody reads another's rows."""

from __future__ import annotations

import json
import uuid

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from agents.models import AgentRun, Conversation, Message
from agents.services import conversation_create, conversation_post_message, run_execute
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def messages_url(conversation_id: int) -> str:
    return f"/api/conversations/{conversation_id}/messages/"


def test_creating_a_conversation_answers_201_with_its_id(alice_api, alice):
    response = alice_api.post("/api/conversations/", {"title": "My espresso machine"}, format="json")

    assert response.status_code == 201
    conversation = Conversation.objects.get()
    assert conversation.user == alice
    assert response.json()["id"] == conversation.pk
    assert response.json()["title"] == "My espresso machine"
    assert response.json()["agent_name"] == "support"

    untitled = alice_api.post("/api/conversations/", {}, format="json")
    assert untitled.status_code == 201
    assert untitled.json()["title"] == ""


def test_a_title_too_long_is_named(alice_api):
    response = alice_api.post("/api/conversations/", {"title": "x" * 201}, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"title"}


def test_the_list_holds_only_my_conversations(alice_api, alice):
    mine = conversation_create(user=alice, title="Mine")
    conversation_create(user=UserFactory(), title="Bob's")

    response = alice_api.get("/api/conversations/")

    assert response.status_code == 200
    assert response.json()["count"] == 1
    assert [c["id"] for c in response.json()["results"]] == [mine.pk]


def test_a_conversation_comes_with_its_messages(alice_api, alice, queued):
    conversation = conversation_create(user=alice)
    run = conversation_post_message(conversation=conversation, content="where is my order A-1001?")

    response = alice_api.get(f"/api/conversations/{conversation.pk}/")

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == conversation.pk
    assert body["title"] == "where is my order A-1001?"
    assert [(m["role"], m["content"], m["run_id"]) for m in body["messages"]] == [
        ("user", "where is my order A-1001?", str(run.pk))
    ]


def test_posting_a_message_answers_202_and_queues_the_run_after_commit(
    alice_api, alice, queued, django_capture_on_commit_callbacks
):
    conversation = conversation_create(user=alice)

    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(
            messages_url(conversation.pk), {"content": "refund order A-1001, $150"}, format="json"
        )

    assert response.status_code == 202
    run = AgentRun.objects.get()
    assert response.json() == {"run_id": str(run.pk), "status": "queued"}
    assert queued == [str(run.pk)]
    assert Message.objects.get().content == "refund order A-1001, $150"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param({"content": ""}, "The message is empty.", id="empty"),
        pytest.param({"content": "  \n "}, "The message is empty.", id="only-spaces"),
        pytest.param({"content": "x" * 4001}, "The message is longer than 4000 characters.", id="too-long"),
        pytest.param({}, "This field is required.", id="missing"),
        pytest.param({"content": None}, "This field may not be null.", id="null"),
        pytest.param({"content": {"text": "hi"}}, "Not a valid string.", id="not-a-string"),
    ],
)
def test_a_bad_message_is_a_400_naming_content(alice_api, alice, queued, body, message):
    conversation = conversation_create(user=alice)

    response = alice_api.post(messages_url(conversation.pk), body, format="json")

    assert response.status_code == 400
    assert response.json() == {"content": [message]}
    assert not AgentRun.objects.exists()
    assert queued == []


def test_a_message_that_is_not_json_is_refused(alice_api, alice):
    conversation = conversation_create(user=alice)
    response = alice_api.post(messages_url(conversation.pk), {"content": "hi"})  # multipart
    assert response.status_code == 415
    assert "detail" in response.json()


def test_another_customers_conversation_is_a_404_for_every_verb(alice_api, bob, queued):
    theirs = conversation_create(user=bob)

    assert alice_api.get(f"/api/conversations/{theirs.pk}/").status_code == 404
    response = alice_api.post(messages_url(theirs.pk), {"content": "refund order B-2001, $500"}, format="json")
    assert response.status_code == 404
    assert response.json() == {"detail": f"Conversation #{theirs.pk} does not exist."}
    assert alice_api.get("/api/conversations/999999/").status_code == 404
    assert not Message.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_run_reads_with_its_status_answer_and_events(alice_api, alice, queued):
    conversation = conversation_create(user=alice)
    run = conversation_post_message(conversation=conversation, content="where is my order A-1001?")
    assert alice_api.get(f"/api/runs/{run.pk}/").json()["status"] == "queued"
    run_execute(run_id=run.pk)

    response = alice_api.get(f"/api/runs/{run.pk}/")

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == str(run.pk)
    assert body["conversation_id"] == conversation.pk
    assert body["status"] == "succeeded"
    assert body["error"] == ""
    assert body["answer"] == "Order A-1001 is delivered, total $249.00."
    assert body["started_at"] is not None
    assert body["finished_at"] is not None
    types = [e["type"] for e in body["events"]]
    assert types[0] == "step"
    assert types[-1] == "done"
    shown = [e["text"] for e in body["events"] if e["text"]]
    assert shown[:2] == ["Checking your order A-1001…", "Found order A-1001 (delivered)."]
    call = next(e for e in body["events"] if e["type"] == "tool_call")
    assert call["kind"] == "tool_call"
    assert call["data"]["args"] == {"order_id": "A-1001"}


def test_another_customers_run_is_a_404(alice_api, bob, queued):
    theirs = conversation_post_message(conversation=conversation_create(user=bob), content="hello")
    response = alice_api.get(f"/api/runs/{theirs.pk}/")
    assert response.status_code == 404
    assert response.json() == {"detail": f"Run {theirs.pk} does not exist."}
    assert alice_api.get(f"/api/runs/{uuid.uuid4()}/").status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/conversations/"),
        ("post", "/api/conversations/"),
        ("get", "/api/conversations/1/"),
        ("post", "/api/conversations/1/messages/"),
        ("get", f"/api/runs/{uuid.UUID(int=1)}/"),
    ],
)
def test_anonymous_callers_are_refused(method, path):
    response = getattr(APIClient(), method)(path, {}, format="json")
    assert response.status_code == 403
    assert "detail" in response.json()


def test_a_token_works_like_a_session(alice, queued):
    conversation = conversation_create(user=alice)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=alice).key}")

    response = client.post(messages_url(conversation.pk), {"content": "hello"}, format="json")

    assert response.status_code == 202


def test_the_page_s_script_needs_the_csrf_header_with_a_session(alice, queued):
    conversation = conversation_create(user=alice)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    page = browser.get(f"/chat/{conversation.pk}/")
    token = page.cookies["csrftoken"].value
    body = json.dumps({"content": "hello"})

    refused = browser.post(messages_url(conversation.pk), body, content_type="application/json")
    accepted = browser.post(
        messages_url(conversation.pk), body, content_type="application/json", headers={"X-CSRFToken": token}
    )

    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    assert accepted.status_code == 202


def test_the_schema_documents_the_chat_endpoints(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    paths = schema["paths"]

    assert set(paths["/api/conversations/"]) == {"get", "post"}
    assert set(paths["/api/conversations/{id}/"]["get"]["responses"]) == {"200", "403", "404"}
    post_message = paths["/api/conversations/{id}/messages/"]["post"]
    assert set(post_message["responses"]) == {"202", "400", "403", "404", "409", "413", "415", "429"}
    assert set(paths["/api/runs/{id}/"]["get"]["responses"]) == {"200", "403", "404"}
    run = schema["components"]["schemas"]["Run"]["properties"]
    assert {"status", "error", "answer", "created_at", "started_at", "finished_at", "events"} <= set(run)
    assert "waiting_for_approval" in run["status"]["allOf"][0]["enum"]


@pytest.mark.django_db(transaction=True)
def test_a_failed_run_tells_the_customer_in_plain_words_and_hides_the_technical_detail(
    alice_api, alice, queued, settings
):
    from agents.support import support_agent

    settings.ANVIA_MODEL = "llama3.2"
    settings.OPENAI_BASE_URL = "http://127.0.0.1:9/v1"
    support_agent.model.__dict__.pop("client", None)
    try:
        run = conversation_post_message(conversation=conversation_create(user=alice), content="hello")
        run_execute(run_id=run.pk)
    finally:
        support_agent.model.__dict__.pop("client", None)

    body = alice_api.get(f"/api/runs/{run.pk}/").json()
    assert body["status"] == "failed"
    assert body["answer"].startswith("Sorry, the assistant is unavailable")
    assert "127.0.0.1:9" not in json.dumps(body)
    assert "127.0.0.1:9" in AgentRun.objects.get(pk=run.pk).error
