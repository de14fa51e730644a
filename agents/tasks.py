from __future__ import annotations

import uuid

from celery import shared_task

from agents.services import run_execute, runs_recover_orphaned, runs_requeue_stale


def lease_owner(hostname: str | None) -> str:
    """Which worker holds a run (logs, ``approvals_status``); unique to this execution."""
    return f"{(hostname or 'worker')[:51]}/{uuid.uuid4().hex[:12]}"


@shared_task(bind=True, name="agents.tasks.run_agent", acks_late=True, reject_on_worker_lost=True)
def run_agent(self, run_id: str) -> None:
    run_execute(run_id=run_id, owner=lease_owner(self.request.hostname))


@shared_task(name="agents.tasks.recover_orphaned_runs")
def recover_orphaned_runs() -> int:
    return runs_recover_orphaned()


@shared_task(name="agents.tasks.requeue_stale_runs")
def requeue_stale_runs() -> int:
    return runs_requeue_stale()
