"""The chat's answer arrives in pieces: each piece is published on the conversation's group as it
is written, none is saved; the run's events and the saved answer are what they always were."""

from __future__ import annotations

import threading

import pytest

from agents.models import Message, RunEvent
from agents.selectors import timeline_item
from agents.services import RunRecorder, run_execute
from anvia import Event
from tests.support.chats import ask

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def published(monkeypatch) -> list[dict]:
    sent: list[dict] = []
    monkeypatch.setattr("agents.services.group_send_soon", lambda group, message: sent.append(message))
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
