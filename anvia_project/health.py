"""``/healthz``: is the database, Redis and a worker answering?

Unauthenticated, so it says only ``ok`` or ``error`` per part: no URLs, hostnames, worker names
or exception text (those go to the log). 200 when every part is ok, 503 otherwise. Each check is
bounded: Redis gets 1 s, and a worker ping returns at the first reply (1 s when none answers).
"""

from __future__ import annotations

import logging

import redis
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

logger = logging.getLogger("anvia.health")

OK = "ok"
ERROR = "error"
REDIS_TIMEOUT_SECONDS = 1.0
WORKER_PING_TIMEOUT_SECONDS = 1.0


def check_database() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except Exception as error:
        logger.warning("health: database check failed: %s", type(error).__name__)
        return False


def check_redis() -> bool:
    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=REDIS_TIMEOUT_SECONDS, socket_timeout=REDIS_TIMEOUT_SECONDS
    )
    try:
        return bool(client.ping())
    except redis.RedisError as error:
        logger.warning("health: Redis check failed: %s", type(error).__name__)
        return False
    finally:
        client.close()


def check_worker() -> bool:
    """At least one Celery worker answers a ping over the broker."""
    from anvia_project.celery import app

    try:
        replies = app.control.ping(timeout=WORKER_PING_TIMEOUT_SECONDS, limit=1)
    except Exception as error:
        logger.warning("health: worker ping failed: %s", type(error).__name__)
        return False
    if not replies:
        logger.warning("health: no Celery worker answered a ping within %.0f s", WORKER_PING_TIMEOUT_SECONDS)
    return bool(replies)


def health() -> dict[str, str]:
    database = check_database()
    redis_ok = check_redis()
    # Workers are reached through Redis: without it a ping could only hang on reconnecting.
    worker = redis_ok and check_worker()
    parts = {"database": database, "redis": redis_ok, "worker": worker}
    report = {name: OK if ok else ERROR for name, ok in parts.items()}
    report["status"] = OK if all(parts.values()) else ERROR
    return report


@never_cache
@require_safe
def healthz(request):
    report = health()
    return JsonResponse(report, status=200 if report["status"] == OK else 503)
