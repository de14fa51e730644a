"""The Celery app; its settings are the ``CELERY_*`` names in Django's settings."""

from __future__ import annotations

import os

from celery import Celery, signals

from anvia_project import redis_broker

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "anvia_project.settings")

# kombu's Redis transport with a fix: without it a worker dies when Redis restarts while a task is
# unacknowledged (a run blocked on a decision). Why, and for which versions: anvia_project/redis_broker.py.
redis_broker.install()

app = Celery("anvia_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.celeryd_init.connect
def _keep_database_connections(sender=None, conf=None, **kwargs) -> None:
    """A worker keeps each thread's database connection across tasks, for
    ``ANVIA_WORKER_CONN_MAX_AGE`` seconds, checked before reuse (``CONN_HEALTH_CHECKS``).

    Opening one per task cost a PostgreSQL backend start and the client's connect and
    authentication every time (README "Benchmarks"). Celery's Django fix-up closes every
    connection after every task unless ``CELERY_DB_REUSE_MAX`` is set; then Django's own rule
    (``close_if_unusable_or_obsolete``, run before each task) decides, as for a web request.
    Only real worker processes (``celeryd_init``), not the in-thread workers of the tests.
    """
    from django.conf import settings
    from django.db import connections

    max_age = settings.ANVIA_WORKER_CONN_MAX_AGE
    if max_age <= 0:
        return
    for alias in connections:
        connections.settings[alias].get("OPTIONS", {}).pop("pool", None)  # the web's (DATABASE_POOL)
        connections.settings[alias].update(CONN_MAX_AGE=max_age, CONN_HEALTH_CHECKS=True)
    if conf is not None:
        conf.update(CELERY_DB_REUSE_MAX=2**31)  # the fix-up's count of tasks between closes: never
    signals.task_prerun.connect(_drop_unusable_connections, weak=False)


def _drop_unusable_connections(**kwargs) -> None:
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        connection.close_if_unusable_or_obsolete()
