from __future__ import annotations

import pytest

from anvia import Agent
from anvia.testing import ScriptedModel, approve_all, call, reject_all, reject_all_with
from tests.anvia.tools_fixtures import make_refund_tool


def test_scripted_model_records_requests_and_complains_when_the_script_runs_out():
    model = ScriptedModel([call("refund_order", order_id="A-1", amount=5)])
    agent = Agent(name="a", instructions="", model=model, tools=[make_refund_tool([])])
    with pytest.raises(Exception, match="called 2 times but has 1 replies"):
        agent.prompt("x").send_sync()
    assert model.requests[0].messages[0].content == "x"


def test_scripted_model_accepts_a_function_of_the_request():
    model = ScriptedModel(lambda request: f"You said {request.messages[-1].content}.")
    assert Agent(name="a", instructions="", model=model).prompt("hi").send_sync().text == "You said hi."


def test_approve_all_and_reject_all():
    executed = []
    agent = Agent(
        name="a",
        instructions="",
        model=ScriptedModel([call("refund_order", order_id="A", amount=500), "ok"]),
        tools=[make_refund_tool(executed)],
    )
    agent.prompt("x").request_hook(approve_all).send_sync()
    assert len(executed) == 1

    agent.model = ScriptedModel([call("refund_order", order_id="A", amount=500), "no"])
    response = agent.prompt("x").request_hook(reject_all).send_sync()
    assert response.tool_calls[0].message == "Refund was not approved."
    assert len(executed) == 1

    agent.model = ScriptedModel([call("refund_order", order_id="A", amount=500), "no"])
    response = agent.prompt("x").request_hook(reject_all_with("Not today.")).send_sync()
    assert response.tool_calls[0].message == "Not today."
