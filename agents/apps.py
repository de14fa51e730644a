from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"

    def ready(self):
        from celery.signals import worker_ready

        from approvals.signals import approval_decided

        approval_decided.connect(_resume_after_decision, dispatch_uid="agents.resume_after_decision")
        worker_ready.connect(_recover_on_worker_start, dispatch_uid="agents.recover_on_worker_start", weak=False)


def _resume_after_decision(sender, approval, **kwargs):
    from agents.services import run_resume_after_decision

    run_resume_after_decision(approval=approval)


def _recover_on_worker_start(sender=None, **kwargs):
    # A worker that died mid-run left its runs leased; pick them up as soon as one starts again.
    from agents.tasks import recover_orphaned_runs, requeue_stale_runs

    recover_orphaned_runs.delay()
    requeue_stale_runs.delay()
