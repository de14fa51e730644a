"""Waiting for something a test can observe, always with a deadline; never a bare sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis

from agents.models import AgentRun
from approvals.models import Approval

# How often ``wait_until`` looks again: well under what any test waits for, cheap for the database.
POLL_SECONDS = 0.05


def wait_until(
    predicate: Callable[[], Any], *, timeout: float, message: str, describe: Callable[[], str] | None = None
) -> Any:
    """Poll ``predicate`` until it returns something truthy, and return that; fail with ``message``
    (and what ``describe()`` says of the state) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f" Last seen: {describe()}" if describe else ""
            raise AssertionError(f"{message} (waited {timeout:.0f} s).{detail}")
        time.sleep(POLL_SECONDS)


def runs_and_approvals(*runs: AgentRun) -> Callable[[], str]:
    """What a failed wait on ``runs`` reports: their status, attempts, lease and error, and the approvals."""

    def text() -> str:
        rows = AgentRun.objects.filter(pk__in=[r.pk for r in runs]).values(
            "pk", "status", "attempts", "lease_owner", "error"
        )
        return f"runs {list(rows)}, approvals {list(Approval.objects.values_list('run_id', 'status'))}"

    return text


def run_where(run: AgentRun, predicate: Callable[[AgentRun], bool], what: str, *, timeout: float = 15.0) -> AgentRun:
    """The run, read again, once ``predicate`` holds for it; ``what`` says what never happened."""

    def reached() -> AgentRun | None:
        current = AgentRun.objects.get(pk=run.pk)
        return current if predicate(current) else None

    return wait_until(reached, timeout=timeout, message=f"run {run.pk} {what}", describe=runs_and_approvals(run))


def run_in_status(run: AgentRun, *statuses: str, timeout: float = 15.0) -> AgentRun:
    """The run, once its status is one of ``statuses``."""
    return run_where(run, lambda current: current.status in statuses, f"never reached {statuses}", timeout=timeout)


def run_finished(run: AgentRun, *, timeout: float = 15.0) -> AgentRun:
    """The run, once it succeeded or failed."""
    return run_in_status(run, *AgentRun.FINISHED, timeout=timeout)


def approval_asked_by(run: AgentRun, *, timeout: float = 15.0) -> Approval:
    """The approval the run asked for (the first one), once it exists."""
    return wait_until(
        lambda: Approval.objects.filter(run_id=str(run.pk)).order_by("pk").first(),
        timeout=timeout,
        message=f"run {run.pk} never asked for an approval",
        describe=runs_and_approvals(run),
    )


def redis_client_blocked(admin: redis.Redis, name: str, *, timeout: float = 5.0) -> None:
    """Return once Redis lists the client called ``name`` as blocked (``BLPOP`` waiting: flag ``b``).

    What ``bench/decision_latency.py`` does: a decision published after this provably reaches a
    waiter that is already asleep in Redis, not one still on its way there.
    """
    wait_until(
        lambda: any(c.get("name") == name and "b" in c.get("flags", "") for c in admin.client_list()),
        timeout=timeout,
        message=f"the Redis client {name!r} never blocked",
        describe=lambda: str([(c.get("name"), c.get("flags"), c.get("cmd")) for c in admin.client_list()]),
    )
