"""Whatever a client sends, the API answers 4xx naming the problem, never 500 (issue 9, item 5).

Abuse by hand, schemathesis-style: deep nesting, garbage bytes, wrong content types, huge bodies,
NUL characters and unpaired surrogates, against every endpoint that reads a body.
"""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from agents.models import AgentRun
from agents.services import conversation_create
from approvals.models import Approval
from tests.factories import ApprovalFactory

pytestmark = pytest.mark.django_db


def post(client: APIClient, url: str, body: bytes | str, content_type: str = "application/json"):
    return client.generic("POST", url, data=body, content_type=content_type)


def nested(depth: int, *, open_: str = "[", close: str = "]", inner: str = "1") -> str:
    return open_ * depth + inner + close * depth


def test_a_message_body_nested_5000_deep_is_a_400_naming_the_nesting(alice_api, alice, queued):
    conversation = conversation_create(user=alice)
    body = '{"content": ' + nested(5000) + "}"

    response = post(alice_api, f"/api/conversations/{conversation.pk}/messages/", body)

    assert response.status_code == 400
    assert "nested too deeply" in response.json()["detail"]
    assert not AgentRun.objects.exists()


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        pytest.param(nested(5000), "nested too deeply", id="arrays-5000"),
        pytest.param(nested(5000, open_='{"a":', close="}"), "nested too deeply", id="objects-5000"),
        pytest.param(nested(100), "nested too deeply", id="arrays-100"),
        pytest.param('{"content": "a\\u0000b"}', "NUL", id="nul-escaped"),
        pytest.param('{"content\\u0000": "hi"}', "NUL", id="nul-in-key"),
        pytest.param('{"content": "\\ud800"}', "unpaired surrogate", id="lone-surrogate"),
        pytest.param('{"content": NaN}', "NaN", id="nan"),
        pytest.param('{"content": "hi"', "Not valid JSON", id="truncated"),
        pytest.param("\x00\x01\x02garbage", "Not valid JSON", id="garbage"),
        pytest.param("", None, id="empty"),
    ],
)
def test_a_bad_message_body_is_a_400_that_says_why(alice_api, alice, queued, body, problem):
    conversation = conversation_create(user=alice)

    response = post(alice_api, f"/api/conversations/{conversation.pk}/messages/", body)

    assert response.status_code == 400
    if problem:
        assert problem in response.json()["detail"]
    assert not AgentRun.objects.exists()


def test_bytes_that_are_not_utf8_are_a_400(alice_api, alice, queued):
    conversation = conversation_create(user=alice)
    response = post(alice_api, f"/api/conversations/{conversation.pk}/messages/", b'{"content": "\xff\xfe"}')
    assert response.status_code == 400
    assert "utf-8" in response.json()["detail"].lower()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("[]", id="list"),
        pytest.param("42", id="number"),
        pytest.param('"hi"', id="string"),
        pytest.param("null", id="null"),
    ],
)
def test_a_body_that_is_not_an_object_is_a_400(alice_api, alice, queued, body):
    conversation = conversation_create(user=alice)
    response = post(alice_api, f"/api/conversations/{conversation.pk}/messages/", body)
    assert response.status_code == 400
    assert not AgentRun.objects.exists()


def test_a_body_over_the_limit_is_a_413_naming_the_limit(alice_api, alice, queued, settings):
    conversation = conversation_create(user=alice)
    limit = settings.ANVIA_API_MAX_BODY_BYTES
    body = json.dumps({"content": "x" * limit})

    response = post(alice_api, f"/api/conversations/{conversation.pk}/messages/", body)

    assert response.status_code == 413
    assert f"larger than {limit} bytes" in response.json()["detail"]
    assert not AgentRun.objects.exists()


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("text/plain", 415),
        ("application/x-www-form-urlencoded", 415),
        ("multipart/form-data; boundary=xyz", 415),
        ("application/xml", 415),
        ("\x00\x01garbage", 415),
        ("", 415),
    ],
)
def test_wrong_content_types_are_refused_naming_the_problem(alice_api, alice, queued, content_type, status):
    conversation = conversation_create(user=alice)

    response = post(alice_api, f"/api/conversations/{conversation.pk}/messages/", '{"content": "hi"}', content_type)

    assert response.status_code == status
    assert response.json()["detail"]
    assert not AgentRun.objects.exists()


def test_an_unknown_charset_is_ignored_as_django_does(alice_api, alice, queued):
    conversation = conversation_create(user=alice)
    content_type = "application/json; charset=no-such-charset"  # Django keeps utf-8

    response = post(alice_api, f"/api/conversations/{conversation.pk}/messages/", '{"content": "hi"}', content_type)

    assert response.status_code == 202


def test_the_conversations_endpoint_refuses_deep_bodies_too(alice_api):
    response = post(alice_api, "/api/conversations/", '{"title": ' + nested(5000) + "}")
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["detail"]


def test_a_reviewers_edited_args_nested_5000_deep_are_a_400(reviewer_api):
    approval = ApprovalFactory()
    client = reviewer_api
    url = f"/api/approvals/{approval.pk}/decision/"

    deep = post(client, url, '{"approved": true, "args": ' + nested(5000, open_='{"a":', close="}") + "}")
    nul = post(client, url, '{"approved": true, "reason": "ok", "args": {"order_id": "A-1\\u0000"}}')

    assert deep.status_code == 400
    assert "nested too deeply" in deep.json()["detail"]
    assert nul.status_code == 400
    assert "NUL" in nul.json()["detail"]
    assert Approval.objects.get().status == Approval.Status.PENDING


def test_the_review_page_refuses_edited_args_nested_5000_deep(reviewer_client):
    approval = ApprovalFactory()

    response = reviewer_client.post(
        f"/review/{approval.pk}/",
        {"decision": "approve", "reason": "", "edited_args": nested(5000, open_='{"a":', close="}")},
    )

    assert response.status_code == 400
    assert "nested too deeply" in response.content.decode()
    assert Approval.objects.get().status == Approval.Status.PENDING


def test_huge_strings_and_nul_characters_on_the_chat_page_never_answer_500(client, alice, queued, settings):
    conversation = conversation_create(user=alice)
    client.force_login(alice)
    url = f"/chat/{conversation.pk}/"

    nul = client.post(url, {"content": "hello\x00there"})
    huge = client.post(url, {"content": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)})

    assert nul.status_code == 400
    assert huge.status_code == 400
    assert not AgentRun.objects.exists()
