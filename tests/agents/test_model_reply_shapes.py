"""What the app does with the shapes real model servers send: long call ids, empty replies, and
who reads a failed run's technical error."""

from __future__ import annotations

import pytest

from agents.models import AgentRun, Message
from agents.services import run_execute
from anvia import ModelReply
from anvia.testing import ScriptedModel, call
from approvals.models import Approval
from approvals.services import approval_decide
from shop.models import Refund
from tests.factories import ReviewerFactory, UserFactory
from tests.support.chats import ask

pytestmark = pytest.mark.django_db(transaction=True)

# What llama.cpp's server makes; the id of a 5,000-character one is replaced by its digest.
LLAMA_CALL_ID = "call__0_refund_order_cmpl-37816154-ce7b-40ff-a234-43c10030218b"


@pytest.fixture
def scripted_support(monkeypatch):
    """Give the support agent a scripted model for one test."""
    from agents.support import support_agent

    def install(script) -> ScriptedModel:
        model = ScriptedModel(script)
        monkeypatch.setattr(support_agent, "model", model)
        return model

    return install


@pytest.mark.parametrize("call_id", [LLAMA_CALL_ID, "x" * 5000], ids=["llama-cpp-id", "5000-characters"])
def test_a_long_call_id_reaches_the_approval_and_the_refund_key_whole(
    alice, queued, scripted_support, settings, call_id
):
    settings.ANVIA_APPROVAL_BLOCK_SECONDS = 0
    scripted_support([call("refund_order", order_id="A-1001", amount=150, id=call_id), "Refunded $150."])
    run = ask(alice, "refund order A-1001, $150")

    assert run_execute(run_id=run.pk).status == "suspended"
    approval = Approval.objects.get()
    if len(call_id) <= 200:
        assert approval.call_id == call_id
    approval_decide(approval_id=approval.pk, reviewer=ReviewerFactory(), approved=True)
    assert run_execute(run_id=run.pk).status == "succeeded"

    refund = Refund.objects.get()
    assert refund.amount == 150
    assert refund.idempotency_key == f"{run.pk}:{approval.call_id}"
    recorded = AgentRun.objects.get(pk=run.pk).state["tool_calls"][0]["call_id"]
    assert recorded == approval.call_id


def test_an_empty_reply_twice_fails_the_run_with_a_reason_staff_can_read(alice, queued, scripted_support):
    model = scripted_support([ModelReply(text=""), ModelReply(text="  ")])
    run = ask(alice, "hello")

    failed = run_execute(run_id=run.pk)

    assert model.calls == 2
    assert failed.status == "failed"
    assert "neither text nor a tool call" in failed.error
    answer = Message.objects.get(run=run, role="assistant").content
    assert answer.startswith("Sorry, the assistant is unavailable")
    assert "tool call" not in answer


def test_one_empty_reply_is_asked_again_and_the_customer_gets_the_answer(alice, queued, scripted_support):
    scripted_support([ModelReply(text=""), "Hello! How can I help?"])
    run = ask(alice, "hello")

    assert run_execute(run_id=run.pk).status == "succeeded"
    assert Message.objects.get(run=run, role="assistant").content == "Hello! How can I help?"


@pytest.mark.parametrize(("is_staff", "sees_error"), [(True, True), (False, False)], ids=["staff", "customer"])
def test_a_failed_runs_technical_error_is_shown_to_staff_only(
    queued, scripted_support, client, api_for, is_staff, sees_error
):
    user = UserFactory(username="asker", is_staff=is_staff)
    scripted_support([ModelReply(text=""), ModelReply(text="")])
    run = ask(user, "hello")
    run_execute(run_id=run.pk)
    client.force_login(user)

    body = api_for(user).get(f"/api/runs/{run.pk}/").json()
    page = client.get(f"/chat/{run.conversation_id}/").content.decode()

    assert body["status"] == "failed"
    assert body["answer"].startswith("Sorry, the assistant is unavailable")
    assert ("neither text nor a tool call" in body["error"]) is sees_error
    assert ("neither text nor a tool call" in page) is sees_error
    if not sees_error:
        assert body["error"] == ""
