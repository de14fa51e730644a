"""Studio at the framework level: ``StudioRuns`` and a served ``Studio`` on the in-memory store,
with scripted models. No database here; ``test_approvals_store.py`` brings its own."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator

import pytest
from pydantic import BaseModel

from anvia import Agent, Approval, ToolError, create_tool
from anvia.studio import ActingUser, MemoryStore, Studio
from anvia.studio.runs import StudioRuns
from anvia.testing import ScriptedModel
from tests.anvia.tools_fixtures import make_refund_tool

# Short, so stopping a Studio in a test takes a fraction of a second. A decision still wakes the
# waiting run at once: the store's wait returns as soon as it lands.
TEST_SLICE_SECONDS = 0.1
ALICE = ActingUser(id=7, label="alice")
BOB = ActingUser(id=8, label="bob", note="staff")


class InvoiceRef(BaseModel):
    invoice_id: str


def make_void_tool(executed: list) -> object:
    """A tool that always needs approval."""

    def void(args: InvoiceRef, ctx):
        executed.append((args.invoice_id, ctx.context.get("user_id")))
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


def refund_preview(args, ctx) -> dict:
    """Every order has $80 left to refund: what a reviewer should know before deciding."""
    warnings = [f"Only $80.00 is left to refund on {args.order_id}."] if args.amount > 80 else []
    return {"order": args.order_id, "left_to_refund": "$80.00", "belongs_to_requester": True, "warnings": warnings}


def previewed_refund_agent(model: ScriptedModel, executed: list) -> Agent:
    """``refund_agent`` whose refund tool shows ``refund_preview`` to reviewers."""
    tool = dataclasses.replace(make_refund_tool(executed), preview=refund_preview)
    return Agent(name="support", instructions="Help.", model=model, tools=[tool])


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore(users=[ALICE, BOB])


@pytest.fixture
def studio_runs(store) -> Iterator[Callable[..., StudioRuns]]:
    """``studio_runs(agent, ...)``: a Studio run manager on ``store``; each is stopped after the test."""
    made: list[StudioRuns] = []

    def start(*agents: Agent, on=None) -> StudioRuns:
        runs = StudioRuns(agents, on or store, decision_slice=TEST_SLICE_SECONDS)
        made.append(runs)
        return runs

    yield start
    for runs in made:
        assert runs.shutdown(10), "a Studio run thread did not end"


@pytest.fixture
def served(store) -> Iterator[Callable[..., object]]:
    """``served(agent, ...)``: a Studio serving on a free 127.0.0.1 port; stopped after the test."""
    running = []

    def serve(*agents: Agent, **options):
        studio = Studio(agents, store=options.pop("store", store), decision_slice=TEST_SLICE_SECONDS, **options)
        running.append(studio.serve(port=0))
        return running[-1]

    yield serve
    for studio in running:
        assert studio.stop(10), "a Studio run thread did not end"


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


def pending_approval(runs: StudioRuns, *, tool_name: str | None = None):
    def find():
        return next((r for r in runs.store.pending() if tool_name in (None, r.tool_name)), None)

    return until(runs, find, what=f"a pending approval{f' for {tool_name}' if tool_name else ''}")


def finished(runs: StudioRuns, chat_id: int) -> dict:
    """The chat once its last run has ended."""

    def done():
        chat = runs.chat_detail(chat_id)
        return chat if chat["status"] not in ("running", "waiting_for_approval") else None

    return until(runs, done, what=f"chat {chat_id} to finish")


def event_types(run: dict) -> list[str]:
    return [event["type"] for event in run["events"]]
