"""Studio's run manager against the app's real models and approval runtime, with scripted models."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from pydantic import BaseModel

from agents.models import AgentRun
from anvia import Agent, Approval, ToolError, create_tool
from anvia.studio.runs import StudioRuns
from anvia.testing import ScriptedModel
from approvals.models import Approval as ApprovalRow
from tests.anvia.tools_fixtures import make_refund_tool
from tests.factories import UserFactory

# Short, so stopping a Studio in a test takes a fraction of a second. A decision made in this
# process still wakes the run at once through the decision channel.
TEST_SLICE_SECONDS = 0.2


class InvoiceRef(BaseModel):
    invoice_id: str


def make_void_tool(executed: list) -> object:
    """A tool that always needs approval."""

    def void(args: InvoiceRef, ctx):
        executed.append((args.invoice_id, ctx.idempotency_key))
        return {"invoice_id": args.invoice_id, "status": "void"}

    return create_tool(
        name="void_invoice",
        description="Void an invoice.",
        input=InvoiceRef,
        approval=Approval(reason=lambda call: f"Void invoice {call.args.invoice_id}?", reject_message="Not voided."),
        execute=void,
    )


def make_exploding_tool() -> object:
    def explode(args):
        raise RuntimeError("the ledger is on fire")

    return create_tool(name="explode", description="Always breaks.", execute=explode)


def make_refusing_tool() -> object:
    def refuse(args):
        raise ToolError("no such order")

    return create_tool(name="refuse", description="Says no.", execute=refuse)


def refund_agent(model: ScriptedModel, executed: list, *, name: str = "support") -> Agent:
    return Agent(name=name, instructions="Help.", model=model, tools=[make_refund_tool(executed)])


@pytest.fixture
def alice():
    return UserFactory(username="alice")


@pytest.fixture
def studio() -> Iterator[Callable[..., StudioRuns]]:
    """``studio(agent, ...)``: a Studio run manager; every one made is stopped after the test."""
    made: list[StudioRuns] = []

    def start(*agents: Agent) -> StudioRuns:
        runs = StudioRuns(agents, decision_slice=TEST_SLICE_SECONDS)
        made.append(runs)
        return runs

    yield start
    for runs in made:
        assert runs.shutdown(10), "a Studio run thread did not end"


def until(runs: StudioRuns, predicate: Callable[[], object], *, what: str, timeout: float = 15.0):
    """Wait for ``predicate()`` to be truthy, woken by Studio's change notices (no polling)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = runs.changes.last
        value = predicate()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"Timed out waiting for {what}.")
        runs.changes.wait(seen, remaining)


def pending_approval(runs: StudioRuns, *, tool_name: str | None = None) -> ApprovalRow:
    def find():
        rows = ApprovalRow.objects.filter(status=ApprovalRow.Status.PENDING)
        return (rows.filter(tool_name=tool_name) if tool_name else rows).first()

    return until(runs, find, what=f"a pending approval{f' for {tool_name}' if tool_name else ''}")


def finished(runs: StudioRuns, run: AgentRun) -> AgentRun:
    def done():
        run.refresh_from_db()
        return run if run.status in AgentRun.FINISHED else None

    return until(runs, done, what=f"run {run.pk} to finish")
