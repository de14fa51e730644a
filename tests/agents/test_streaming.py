"""The chat's answer arrives in pieces: each piece is published on the conversation's group as it
is written, none is saved; the run's events and the saved answer are what they always were."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from agents import support
from agents.models import AgentRun, Message, RunEvent
from agents.selectors import timeline_item
from agents.services import RunRecorder, run_execute
from anvia import Event
from tests.support.chats import ask

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def published(monkeypatch) -> list[dict]:
    sent: list[dict] = []
    monkeypatch.setattr("agents.services.group_send_soon", lambda group, message, **_: sent.append(message))
    return sent


def test_the_answer_is_published_in_pieces_and_saved_once(alice, queued, published):
    run = ask(alice, "hello")

    finished = run_execute(run_id=run.pk)

    answer = Message.objects.get(run=run, role="assistant").content
    pieces = [m["data"]["text"] for m in published if m.get("event") == "text_delta"]
    assert len(pieces) > 10
    assert "".join(pieces) == answer
    assert all(m["run_id"] == str(run.pk) and m["type"] == "run.event" for m in published if m.get("event"))
    # The pieces come before the whole answer's events and the end of the run.
    order = [m.get("event") or m["type"] for m in published]
    assert order.index("text") > max(i for i, kind in enumerate(order) if kind == "text_delta")
    assert order[-1] == "run.finished"
    assert published[-1]["text"] == answer
    # Nothing is saved per piece.
    assert finished.status == "succeeded"
    assert not RunEvent.objects.filter(type="text_delta").exists()
    assert list(RunEvent.objects.filter(run=run).values_list("type", flat=True)) == ["step", "text", "done"]


def test_pieces_cost_no_database_write(alice, queued, published, django_assert_num_queries):
    run = ask(alice, "hello")
    recorder = RunRecorder(run, lease=_HeldLease())

    with django_assert_num_queries(0):
        recorder.event(Event(type="text_delta", run_id=str(run.pk), step=1, data={"text": "Hel"}))

    assert published == [{"type": "run.event", "run_id": str(run.pk), "event": "text_delta", "data": {"text": "Hel"}}]


def test_a_worker_that_lost_the_run_publishes_no_pieces(alice, queued, published):
    run = ask(alice, "hello")
    lease = _HeldLease()
    lease.lost.set()

    RunRecorder(run, lease=lease).event(Event(type="text_delta", run_id=str(run.pk), step=1, data={"text": "Hel"}))

    assert published == []


def test_a_piece_has_no_timeline_line():
    assert timeline_item("text_delta", {"text": "Hel"}) is None


class _HeldLease:
    def __init__(self) -> None:
        self.lost = threading.Event()


def test_a_chat_saves_its_events_in_batches_in_the_order_the_chat_saw_them(alice, queued, published):
    run = ask(alice, "where is my order A-1001?")

    with CaptureQueriesContext(connection) as queries:
        finished = run_execute(run_id=run.pk)

    assert finished.status == "succeeded"
    shown = [m["event"] for m in published if m["type"] == "run.event" and m["event"] != "text_delta"]
    saved = list(RunEvent.objects.filter(run=run).order_by("id").values_list("type", flat=True))
    assert saved == shown == ["step", "tool_call", "tool_result", "step", "text", "done"]
    assert published[-1]["type"] == "run.finished"
    # The claim, the fence before the tool (state + the events so far), the end (the rest).
    run_writes = [q["sql"] for q in queries if q["sql"].startswith('UPDATE "agents_agentrun"')]
    assert len(run_writes) == 3, run_writes


def test_the_state_and_events_are_committed_before_the_tool_body_starts(alice, queued, published, monkeypatch):
    run = ask(alice, "where is my order A-1001?")
    seen = {}

    def order_for_customer(**kwargs):
        def look() -> None:  # another connection: sees only what is committed
            try:
                row = AgentRun.objects.get(pk=run.pk)
                seen["outcomes"] = [c["outcome"] for c in row.state["tool_calls"]]
                seen["events"] = list(RunEvent.objects.filter(run=run).values_list("type", flat=True))
            finally:
                connections.close_all()

        reader = threading.Thread(target=look)
        reader.start()
        reader.join(10)
        return real(**kwargs)

    real = support.order_for_customer
    monkeypatch.setattr(support, "order_for_customer", order_for_customer)

    assert run_execute(run_id=run.pk).status == "succeeded"
    assert seen == {"outcomes": ["executing"], "events": ["step", "tool_call"]}
