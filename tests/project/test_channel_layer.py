"""Sending from sync code: ``group_send_soon`` queues, and pieces still waiting may go out as one."""

from __future__ import annotations

from agents.services import _joined_pieces
from anvia_project.channel_layer import _merged


def piece(text: str, run: str = "r1") -> dict:
    return {"type": "run.event", "run_id": run, "event": "text_delta", "data": {"text": text}}


def event(kind: str, run: str = "r1") -> dict:
    return {"type": "run.event", "run_id": run, "event": kind, "data": {}}


def test_waiting_pieces_of_an_answer_go_out_as_one_in_order():
    layer = object()
    batch = [
        (layer, "conversation_1", event("step"), None),
        (layer, "conversation_1", piece("Order "), _joined_pieces),
        (layer, "conversation_1", piece("A-1001 "), _joined_pieces),
        (layer, "conversation_2", piece("Hi", run="r2"), _joined_pieces),  # another chat, in between
        (layer, "conversation_2", piece(" there", run="r2"), _joined_pieces),
        (layer, "conversation_1", piece("is delivered."), _joined_pieces),  # not adjacent: kept apart
        (layer, "conversation_1", event("text"), None),
        (layer, "conversation_1", piece("late"), _joined_pieces),  # never merged into a non-piece
    ]

    sent = [(group, message["event"], message["data"].get("text")) for _, group, message in _merged(batch)]

    assert sent == [
        ("conversation_1", "step", None),
        ("conversation_1", "text_delta", "Order A-1001 "),
        ("conversation_2", "text_delta", "Hi there"),
        ("conversation_1", "text_delta", "is delivered."),
        ("conversation_1", "text", None),
        ("conversation_1", "text_delta", "late"),
    ]
