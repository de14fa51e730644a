from __future__ import annotations

from celery import shared_task

from agents.services import run_execute, runs_recover_orphaned


@shared_task(name="agents.tasks.run_agent", acks_late=True, reject_on_worker_lost=True)
def run_agent(run_id: str) -> None:
    run_execute(run_id=run_id)


@shared_task(name="agents.tasks.recover_orphaned_runs")
def recover_orphaned_runs() -> int:
    return runs_recover_orphaned()
