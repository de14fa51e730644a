"""Agents for the real-model tests, run by a real worker (``ANVIA_AGENTS`` names them).

They are the support agent's instructions and tools on the settings' model, but a 135M model
chooses badly (with ``"auto"`` it often answers nothing at all), so they steer ``tool_choice``:
the first step must call the tool, the next one answers in words. That keeps a chat at two model
calls, each accepted by the server, and makes the approval path reachable.
"""

from __future__ import annotations

from agents import support
from agents.llm import SettingsModel
from anvia import Agent, Approval, create_tool


def first_step(choice: str):
    return lambda state: choice if state.step == 1 else "none"


chat_agent = Agent(
    name="real-model-chat",
    instructions=support.support_agent.instructions,
    model=SettingsModel(),
    tools=[support.lookup_order],  # a protected tool would wait for a reviewer nobody plays here
    tool_choice=first_step("lookup_order"),
)

# Every refund is reviewed here, whatever amount the model picks.
reviewed_refund_order = create_tool(
    name="refund_order",
    description=support.refund_order.description,
    input=support.RefundInput,
    approval=Approval(
        reason=lambda call: f"Review refund of ${call.args.amount:.2f} for {call.args.order_id}.",
        reject_message="Refund was not approved.",
    ),
    execute=support.refund,
)

refund_agent = Agent(
    name="real-model-refund",
    instructions=support.support_agent.instructions,
    model=SettingsModel(),
    tools=[reviewed_refund_order],
    tool_choice=first_step("refund_order"),
)

PATHS = [
    "agents.support.support_agent",
    "tests.support.model_server_agents.chat_agent",
    "tests.support.model_server_agents.refund_agent",
]
