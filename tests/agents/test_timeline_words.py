"""The customer's timeline: each tool's own plain words, no tool names or raw fields, one line per
call even when a resumed run announces it again."""

from __future__ import annotations

from types import SimpleNamespace

from agents.selectors import run_timeline, timeline_item

REFUND = {"order_id": "A-1001", "amount": 131.0}


def events(*pairs):
    return [SimpleNamespace(type=type_, data=data) for type_, data in pairs]


def texts(*pairs) -> list[str]:
    return [item.text for item in run_timeline(events(*pairs))]


def test_an_approved_refund_reads_in_plain_words_once_across_a_resume():
    call = {"call_id": "call_1", "tool_name": "refund_order"}
    asked = {**call, "args": REFUND, "reason": "Review refund of $131.00 for A-1001."}
    shown = texts(
        ("step", {"step": 1}),
        ("tool_call", {**call, "args": REFUND, "requires_approval": True}),
        ("approval_requested", asked),
        ("suspended", {"pending": ["call_1"]}),
        # resumed: the framework announces the pending call again
        ("step", {"step": 1}),
        ("tool_call", {**call, "args": REFUND, "requires_approval": True}),
        ("approval_requested", asked),
        ("approval_decided", {**call, "approved": True, "action": "approve", "message": None}),
        (
            "tool_result",
            {
                **call,
                "outcome": "ran",
                "requires_approval": True,
                "result": {"order_id": "A-1001", "amount": 131.0, "refund_id": "RF-2"},
            },
        ),
        ("done", {"text": "Refunded."}),
    )
    assert shown == [
        "Preparing a $131.00 refund for order A-1001…",
        "A staff member needs to approve this $131.00 refund.",
        "Paused until a staff member decides; the agent carries on then.",
        "Approved — refund RF-2 made: $131.00 back for order A-1001.",
    ]


def test_a_refund_that_fails_after_approval_says_why_without_tool_words():
    call = {"call_id": "c", "tool_name": "refund_order"}
    shown = texts(
        ("approval_decided", {**call, "approved": True, "action": "approve", "message": "amount 118 → 105"}),
        ("tool_result", {**call, "outcome": "error", "requires_approval": True, "message": "Only $80.00 is left."}),
    )
    assert shown == [
        "A staff member approved it with a change.",
        "Approved, but it could not be done: Only $80.00 is left.",
    ]


def test_tools_without_words_and_bad_arguments_still_read_plainly():
    call = {"call_id": "c", "tool_name": "delete_account"}
    shown = texts(
        ("tool_call", {**call, "args": {"user": "x"}}),
        ("approval_requested", {**call, "args": {"user": "x"}, "reason": "Delete {user}?"}),
        ("tool_result", {"call_id": "d", "tool_name": "refund_order", "outcome": "invalid", "message": "amount: bad"}),
        ("tool_call", {"call_id": "e", "tool_name": "refund_order", "args": {"order_id": "A-1"}}),  # no amount
    )
    assert shown == [
        "Working on your request…",
        "A staff member needs to approve the next step.",
        "The agent asked for something it could not do, and is trying again.",
        "Working on your request…",
    ]
    for line in shown:
        assert "_" not in line
        assert "{" not in line


def test_the_key_is_what_the_page_dedupes_on():
    item = timeline_item("tool_call", {"call_id": "call_1", "tool_name": "lookup_order", "args": {"order_id": "A-1"}})
    assert item.key == "tool_call:call_1"
    assert timeline_item("text", {"text": "Let me check.", "final": False}).key == ""
