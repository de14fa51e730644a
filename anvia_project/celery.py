"""The Celery app; its settings are the ``CELERY_*`` names in Django's settings."""

from __future__ import annotations

import os

from celery import Celery

from anvia_project import redis_broker

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "anvia_project.settings")

# kombu's Redis transport with a fix: without it a worker dies when Redis restarts while a task is
# unacknowledged (a run blocked on a decision). Why, and for which versions: anvia_project/redis_broker.py.
redis_broker.install()

app = Celery("anvia_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
