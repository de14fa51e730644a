"""The Celery app; its settings are the ``CELERY_*`` names in Django's settings."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "anvia_project.settings")

app = Celery("anvia_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
