from __future__ import annotations

import pytest
from pydantic import BaseModel

from anvia import Agent, Approval, OfflineModel, create_model, create_tool
from anvia.testing import approve_all, reject_all


class OrderId(BaseModel):
    order_id: str


class Refund(BaseModel):
    order_id: str
    amount: float


def desk(calls):
    def record(name, result):
        def execute(args):
            calls.append((name, args.model_dump()))
            return result(args)

        return execute

    return Agent(
        name="support",
        instructions="",
        model=OfflineModel(),
        tools=[
            create_tool(
                name="lookup_order",
                description="",
                input=OrderId,
                execute=record("lookup_order", lambda a: {"order_id": a.order_id, "status": "shipped", "total": 80}),
            ),
            create_tool(
                name="refund_order",
                description="",
                input=Refund,
                approval=Approval(when=lambda c: c.args.amount > 100, reject_message="Refund was not approved."),
                execute=record(
                    "refund_order", lambda a: {"order_id": a.order_id, "amount": a.amount, "refund_id": "R-1"}
                ),
            ),
            create_tool(
                name="cancel_order",
                description="",
                input=OrderId,
                approval=Approval(),
                execute=record("cancel_order", lambda a: {"order_id": a.order_id, "status": "cancelled"}),
            ),
        ],
    )


@pytest.mark.parametrize(
    ("message", "expected_call", "answer"),
    [
        (
            "refund order A-1001, $150",
            ("refund_order", {"order_id": "A-1001", "amount": 150.0}),
            "Done: I refunded $150.00 for order A-1001 (refund R-1).",
        ),
        (
            "Please refund 40 dollars on order a-1001",
            ("refund_order", {"order_id": "A-1001", "amount": 40.0}),
            "Done: I refunded $40.00 for order A-1001 (refund R-1).",
        ),
        (
            "where is my order A-1002?",
            ("lookup_order", {"order_id": "A-1002"}),
            "Order A-1002 is shipped, total $80.00.",
        ),
        ("cancel order A-1003", ("cancel_order", {"order_id": "A-1003"}), "Done: order A-1003 is now cancelled."),
    ],
)
def test_requests_become_the_right_tool_calls_and_answers(message, expected_call, answer):
    calls = []
    response = desk(calls).prompt(message).request_hook(approve_all).send_sync()
    assert calls == [expected_call]
    assert response.text == answer


def test_a_rejection_is_explained():
    response = desk([]).prompt("refund order A-1001, $150").request_hook(reject_all).send_sync()
    assert response.text == "That didn't go through. Refund was not approved."


def test_it_says_it_is_the_offline_demo_model_when_it_cannot_help():
    response = desk([]).prompt("What is the meaning of life?").send_sync()
    assert "offline demo model" in response.text
    assert "refund order A-1001, $150" in response.text


def test_it_asks_for_what_is_missing():
    assert "the amount" in desk([]).prompt("refund order A-1001").send_sync().text


def test_create_model_picks_offline_by_default_and_openai_compatible_otherwise():
    assert isinstance(create_model("offline"), OfflineModel)
    assert isinstance(create_model(""), OfflineModel)
    remote = create_model("llama3.2", base_url="http://127.0.0.1:11434/v1")
    assert remote.name == "llama3.2"
