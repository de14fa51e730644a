from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from anvia import Agent, RunState, create_hook
from anvia.testing import ScriptedModel, approve_all, call
from tests.anvia.tools_fixtures import make_refund_tool

suspend_protected = create_hook(
    on_tool_call=lambda call: call.tool.suspend("waiting for a reviewer") if call.requires_approval else None
)


def agent_with(model, executed):
    return Agent(name="support", instructions="Help.", model=model, tools=[make_refund_tool(executed)])


def suspended_run(executed):
    model = ScriptedModel(
        [[call("refund_order", order_id="A-1", amount=20), call("refund_order", order_id="A-2", amount=150)]]
    )
    return agent_with(model, executed).prompt("refund both").request_hook(suspend_protected).send_sync()


def test_a_run_suspends_at_the_pending_call_with_plain_json_state():
    executed = []
    response = suspended_run(executed)
    assert response.suspended
    assert [e[:2] for e in executed] == [("A-1", 20)]
    state = json.loads(response.state.to_json())
    assert state["status"] == "suspended"
    assert [c["id"] for c in state["messages"][-2]["tool_calls"]][1] == response.state.pending_calls()[0].id
    assert response.state.pending_calls()[0].name == "refund_order"


def test_resuming_from_json_in_a_fresh_agent_neither_recalls_the_model_nor_reruns_a_tool():
    executed = []
    saved = suspended_run(executed).state.to_json()

    fresh_model = ScriptedModel(["Both refunds are done."])
    resumed = agent_with(fresh_model, executed).resume(saved).request_hook(approve_all).send_sync()

    assert resumed.text == "Both refunds are done."
    assert [e[:2] for e in executed] == [("A-1", 20), ("A-2", 150)]
    assert fresh_model.calls == 1  # only the step after the tool results
    assert [c.outcome for c in resumed.tool_calls] == ["ran", "ran"]
    assert resumed.state.step == 2


def test_resume_in_another_process(tmp_path):
    executed = []
    saved = tmp_path / "state.json"
    saved.write_text(suspended_run(executed).state.to_json())
    script = textwrap.dedent(f"""
        import json
        from anvia import Agent
        from anvia.testing import ScriptedModel, approve_all
        from tests.anvia.tools_fixtures import make_refund_tool
        executed = []
        agent = Agent(name="support", instructions="Help.", model=ScriptedModel(["Done."]),
                      tools=[make_refund_tool(executed)])
        response = agent.resume(open({str(saved)!r}).read()).request_hook(approve_all).send_sync()
        print(json.dumps({{"text": response.text, "executed": executed}}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    out = json.loads(result.stdout)
    assert out["text"] == "Done."
    assert [e[:2] for e in out["executed"]] == [["A-2", 150]]


def test_a_crash_mid_tool_reruns_it_with_the_same_idempotency_key():
    """The state saved just before execute marks the call 'executing'; resuming runs it again
    with the same key, so an idempotent side effect happens once."""
    refunds: dict[str, float] = {}
    executed = []
    checkpoints = []
    tool = make_refund_tool(executed)
    original = tool.execute

    def idempotent_refund(args, ctx):
        refunds.setdefault(ctx.idempotency_key, args.amount)
        return original(args, ctx)

    object.__setattr__(tool, "execute", idempotent_refund)
    model = ScriptedModel([call("refund_order", order_id="A-1", amount=150), "Done."])
    agent = Agent(name="support", instructions="", model=model, tools=[tool])
    agent.prompt("x").request_hook(approve_all).on_checkpoint(lambda s: checkpoints.append(s.to_json())).send_sync()

    at_crash = next(RunState.from_json(c) for c in checkpoints if '"outcome":"executing"' in c)
    assert at_crash.pending_calls()  # the result was never recorded
    again = Agent(name="support", instructions="", model=ScriptedModel(["Done."]), tools=[tool])
    again.resume(at_crash).request_hook(approve_all).send_sync()

    assert len(executed) == 2
    assert executed[0][2] == executed[1][2]
    assert len(refunds) == 1


def test_resuming_a_finished_run_returns_it_unchanged():
    model = ScriptedModel(["Hi."])
    done = agent_with(model, []).prompt("hi").send_sync().state
    again = agent_with(ScriptedModel([]), []).resume(done.model_dump()).send_sync()
    assert again.text == "Hi."


def test_a_state_cannot_resume_on_another_agent():
    import pytest

    done = agent_with(ScriptedModel(["Hi."]), []).prompt("hi").send_sync().state
    other = Agent(name="billing", instructions="", model=ScriptedModel([]))
    with pytest.raises(ValueError, match="belongs to agent 'support'"):
        other.resume(done)
