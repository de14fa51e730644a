from __future__ import annotations

import uuid

from celery import shared_task

# The services queue these tasks, so each task imports its service when it runs (no import cycle).


def lease_owner(hostname: str | None) -> str:
    """Which worker holds a run (logs, ``approvals_status``); unique to this execution."""
    return f"{(hostname or 'worker')[:51]}/{uuid.uuid4().hex[:12]}"


@shared_task(bind=True, name="agents.tasks.run_agent", acks_late=True, reject_on_worker_lost=True)
def run_agent(self, run_id: str) -> None:
    from agents.services import run_execute

    run_execute(run_id=run_id, owner=lease_owner(self.request.hostname))


@shared_task(name="agents.tasks.recover_orphaned_runs")
def recover_orphaned_runs() -> int:
    from agents.services import runs_recover_orphaned

    return runs_recover_orphaned()


@shared_task(name="agents.tasks.requeue_stale_runs")
def requeue_stale_runs() -> int:
    from agents.services import runs_requeue_stale

    return runs_requeue_stale()
