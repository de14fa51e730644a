"""The app's real path against a real model server: chats posted through the API, answered by a
real Celery worker process whose agents talk to llama-cpp-python's server.

Asserts the protocol and the app's behaviour, never the model's wording.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from agents.models import AgentRun
from agents.services import conversation_create
from approvals.models import Approval
from approvals.services import approval_decide
from shop.models import Refund
from tests.factories import ReviewerFactory
from tests.model_server.conftest import ModelServer, record_usage
from tests.support.model_server_agents import PATHS
from tests.support.waiting import wait_until
from tests.support.workers import purge_queues, worker_processes

pytestmark = [pytest.mark.model_server, pytest.mark.django_db(transaction=True), pytest.mark.redis]

RUN_TIMEOUT = 90.0


@pytest.fixture
def real_model_worker(model_server: ModelServer, transactional_db, redis_url, tmp_path, settings):
    settings.ANVIA_AGENTS = PATHS
    purge_queues()
    env = {
        "ANVIA_MODEL": model_server.model,
        "OPENAI_BASE_URL": model_server.base_url,
        "OPENAI_API_KEY": "not-needed",
        "ANVIA_AGENTS": ",".join(PATHS),
        "ANVIA_MODEL_MAX_TOKENS": "48",
        "ANVIA_MODEL_TEMPERATURE": "0",
        "ANVIA_MODEL_SEED": "1",
    }
    with worker_processes(tmp_path) as make:
        yield make("real-model", env=env).wait_ready()


def chat(api: APIClient, user, agent_name: str, content: str) -> AgentRun:
    """A new conversation with ``agent_name``, and the customer's message posted through the API."""
    conversation = conversation_create(user=user, agent_name=agent_name)
    posted = api.post(f"/api/conversations/{conversation.pk}/messages/", {"content": content}, format="json")
    assert posted.status_code == 202, posted.content
    return AgentRun.objects.get(pk=posted.json()["run_id"])


def finished(run: AgentRun) -> AgentRun:
    return wait_until(
        lambda: AgentRun.objects.filter(pk=run.pk, status__in=AgentRun.FINISHED).first(),
        timeout=RUN_TIMEOUT,
        message=f"run {run.pk} did not finish",
        describe=lambda: str(AgentRun.objects.filter(pk=run.pk).values("status", "error").first()),
    )


def test_ten_consecutive_chats_in_one_worker_process_all_get_an_answer(real_model_worker, alice, alice_api):
    api = alice_api
    questions = [
        "Where is my order A-1001?",
        "Hello, can you help me?",
        "What is the status of order A-1001?",
        "Has my espresso machine shipped?",
        "Thanks!",
    ]
    runs = []
    for n in range(10):
        run = finished(chat(api, alice, "real-model-chat", questions[n % len(questions)]))
        runs.append(run)
        assert run.status == "succeeded", f"chat {n + 1} of 10 failed: {run.error}"

    calls = [run.state["usage"]["model_calls"] for run in runs]
    record_usage(runs=len(runs), model_calls=sum(calls))
    assert all(n >= 2 for n in calls)  # a tool step, then the answer: both accepted by the server
    answers = [api.get(f"/api/runs/{run.pk}/").json()["answer"] for run in runs]
    assert all(answers)
    assert "Event loop is closed" not in real_model_worker.log_text()


def test_a_tool_call_made_by_the_model_is_approved_runs_once_and_the_server_takes_its_result(
    real_model_worker, alice, alice_api
):
    api = alice_api
    run = chat(api, alice, "real-model-refund", "Please refund $150 on my order A-1001.")

    approval = wait_until(
        lambda: Approval.objects.filter(run_id=str(run.pk)).first(),
        timeout=RUN_TIMEOUT,
        message="the model's tool call never reached the approval layer",
        describe=lambda: str(AgentRun.objects.filter(pk=run.pk).values("status", "error").first()),
    )
    assert approval.tool_name == "refund_order"
    assert approval.call_id.startswith("call_")  # the server's own id (llama.cpp: call__0_<tool>_cmpl-<uuid>)
    # The model picks the arguments badly; the reviewer corrects them, as a reviewer may.
    approval_decide(
        approval_id=approval.pk,
        reviewer=ReviewerFactory(),
        approved=True,
        edited_args={"order_id": "A-1001", "amount": 150},
    )

    run = finished(run)
    assert run.status == "succeeded", run.error
    refund = Refund.objects.get()
    assert refund.amount == Decimal("150.00")
    assert refund.idempotency_key == f"{run.pk}:{approval.call_id}"
    approval.refresh_from_db()
    assert approval.outcome["outcome"] == "ran"
    # The step after the tool ran sent its result to the server, which answered.
    model_calls = run.state["usage"]["model_calls"]
    assert model_calls >= 2
    assert api.get(f"/api/runs/{run.pk}/").json()["answer"]
    record_usage(runs=1, model_calls=model_calls)
