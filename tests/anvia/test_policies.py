"""Tool policies in the framework: allow / deny / ask in order, facts the rules read, failing
closed, and fingerprints that change when a rule does."""

from __future__ import annotations

from pydantic import BaseModel

from anvia import Agent, Approval, allow, ask, create_hook, create_tool, deny
from anvia.testing import ScriptedModel, call

LIMIT = 100


class RefundArgs(BaseModel):
    order_id: str
    amount: float


def refund_tool(approval: Approval, ran: list):
    return create_tool(
        name="refund_order",
        description="Refund.",
        input=RefundArgs,
        approval=approval,
        execute=lambda args: ran.append(args.amount) or {"ok": True},
    )


def run_once(approval: Approval, amount: float):
    ran: list = []
    model = ScriptedModel([call("refund_order", order_id="A-1", amount=amount), "done"])
    agent = Agent(name="t", instructions="", model=model, tools=[refund_tool(approval, ran)])
    response = agent.prompt("refund").send_sync()
    return response, ran


POLICY = Approval(
    facts=lambda call: {"refunded": 80 if call.args.order_id == "A-1" else 0},
    policy=[
        deny(lambda call: call.args.amount > 1000, message=lambda call: f"No refund of ${call.args.amount:.0f}."),
        ask(lambda call: call.args.amount > 500, quorum=2, name="large"),
        ask(lambda call: call.facts["refunded"] + call.args.amount > LIMIT, reason="Over the limit with earlier ones."),
        allow(name="small", reason="within the limit"),
    ],
)


def test_a_small_refund_runs_unasked_and_says_which_rule_let_it():
    response, ran = run_once(POLICY, 10)

    assert ran == [10]
    record = response.tool_calls[0]
    assert record.outcome == "ran"
    assert record.requires_approval is False
    assert record.policy == {"outcome": "allow", "rule": "small"}


def test_the_facts_make_a_split_refund_ask():
    response, ran = run_once(POLICY, 30)  # 80 already refunded + 30 > 100

    assert ran == []  # no hook approved it: fail closed
    record = response.tool_calls[0]
    assert record.requires_approval is True
    assert record.approval_reason == "Over the limit with earlier ones."
    assert record.policy == {"outcome": "ask", "rule": "ask rule 3"}


def test_a_denied_call_never_reaches_a_hook_and_the_model_reads_the_message():
    asked = []
    model = ScriptedModel([call("refund_order", order_id="A-1", amount=5000), "done"])
    ran: list = []
    agent = Agent(name="t", instructions="", model=model, tools=[refund_tool(POLICY, ran)])
    response = (
        agent.prompt("refund").request_hook(create_hook(on_tool_call=lambda call: asked.append(call))).send_sync()
    )

    assert ran == []
    assert asked == []
    record = response.tool_calls[0]
    assert (record.outcome, record.message) == ("skipped", "No refund of $5000.")
    assert record.policy == {"outcome": "deny", "rule": "deny rule 1"}
    tool_message = next(m for m in model.requests[-1].messages if m.role == "tool")
    assert "No refund of $5000." in tool_message.content


def test_the_first_matching_rule_wins_and_carries_its_quorum():
    seen = []
    hook_calls = []

    def on_policy(call):
        seen.append(call.policy)

    model = ScriptedModel([call("refund_order", order_id="A-2", amount=600), "done"])
    agent = Agent(name="t", instructions="", model=model, tools=[refund_tool(POLICY, [])])
    agent.prompt("refund").request_hook(
        create_hook(on_policy=on_policy, on_tool_call=lambda call: hook_calls.append(call) or call.tool.skip("no"))
    ).send_sync()

    assert [(v.outcome, v.rule, v.quorum) for v in seen] == [("ask", "large", 2)]
    assert seen[0].facts == {"refunded": 0}
    assert hook_calls[0].facts == {"refunded": 0}


def test_facts_that_fail_ask_a_person_and_say_why():
    def broken(call):
        raise ConnectionError("shop database down")

    guarded = Approval(facts=broken, policy=[allow()])
    response, ran = run_once(guarded, 1)

    assert ran == []
    record = response.tool_calls[0]
    assert record.requires_approval is True
    assert "the facts could not be gathered: ConnectionError: shop database down" in record.approval_reason


def test_a_rule_that_raises_asks_a_person():
    guarded = Approval(policy=[allow(lambda call: call.facts["missing"])])
    response, _ = run_once(guarded, 1)
    assert response.tool_calls[0].requires_approval is True
    assert "allow rule 1 raised KeyError" in response.tool_calls[0].approval_reason


def test_when_alone_behaves_as_before():
    gated = Approval(when=lambda call: call.args.amount > 100)
    assert run_once(gated, 50)[1] == [50]
    assert run_once(gated, 150)[1] == []


def test_the_policy_fingerprint_follows_the_code_and_the_values_it_reads(monkeypatch):
    def make(threshold_rule):
        return Approval(policy=[ask(threshold_rule), allow()])

    same_a = make(lambda call: call.args.amount > LIMIT).fingerprint()
    same_b = make(lambda call: call.args.amount > LIMIT).fingerprint()
    other_code = make(lambda call: call.args.amount >= LIMIT).fingerprint()
    monkeypatch.setitem(globals(), "LIMIT", 200)
    other_value = make(lambda call: call.args.amount > LIMIT).fingerprint()

    assert same_a == same_b
    assert len({same_a, other_code, other_value}) == 3
    assert Approval(quorum=2).fingerprint() != Approval(quorum=1).fingerprint()
    # Wording is not policy: changing what the reviewer reads asks nobody again.
    assert Approval(reason="a").fingerprint() == Approval(reason="b").fingerprint()


def test_the_tool_fingerprint_follows_the_input_schema():
    class Wider(BaseModel):
        order_id: str
        amount: float
        note: str = ""

    first = refund_tool(POLICY, []).fingerprint()
    assert first == refund_tool(POLICY, []).fingerprint()
    wider = create_tool(name="refund_order", description="Refund.", input=Wider, execute=lambda a: None)
    assert wider.fingerprint() != first
