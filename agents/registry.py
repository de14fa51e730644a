"""The agents this app can run, by name: the ``ANVIA_AGENTS`` setting lists them as dotted paths."""

from __future__ import annotations

from functools import cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from anvia import Agent


def get_agent(name: str) -> Agent:
    """The agent called ``name``; ``LookupError`` names the ones there are."""
    agents = all_agents()
    if name not in agents:
        raise LookupError(f"No agent named {name!r}; there are: {', '.join(agents)}.")
    return agents[name]


def all_agents() -> dict[str, Agent]:
    return _agents_from(tuple(settings.ANVIA_AGENTS))


@cache
def _agents_from(paths: tuple[str, ...]) -> dict[str, Agent]:
    agents: dict[str, Agent] = {}
    for path in paths:
        try:
            agent = import_string(path)
        except ImportError as error:
            raise ImproperlyConfigured(f"ANVIA_AGENTS names {path!r}, which cannot be imported: {error}") from error
        if not isinstance(agent, Agent):
            raise ImproperlyConfigured(f"ANVIA_AGENTS names {path!r}, which is not an anvia.Agent.")
        if agent.name in agents:
            raise ImproperlyConfigured(f"ANVIA_AGENTS lists two agents named {agent.name!r}.")
        agents[agent.name] = agent
    return agents
