"""The agents this app can run, by name."""

from __future__ import annotations

from anvia import Agent


def get_agent(name: str) -> Agent:
    """The agent called ``name``; ``LookupError`` names the ones there are."""
    agents = all_agents()
    if name not in agents:
        raise LookupError(f"No agent named {name!r}; there are: {', '.join(agents)}.")
    return agents[name]


def all_agents() -> dict[str, Agent]:
    from agents.support import support_agent

    return {agent.name: agent for agent in [support_agent]}
