"""``/healthz``: database, Redis and a Celery worker, each ``ok`` or ``error``; nothing sensitive."""

from __future__ import annotations

import socket
import time

import pytest
from django.db import OperationalError

from tests.support.workers import purge_queues, thread_worker

pytestmark = pytest.mark.redis

ALL_OK = {"database": "ok", "redis": "ok", "worker": "ok", "status": "ok"}


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def assert_leaks_nothing(response, *secrets: str) -> None:
    body = response.content.decode()
    for secret in ("redis://", "127.0.0.1", "localhost", socket.gethostname(), "@", *secrets):
        assert secret not in body, f"/healthz shows {secret!r}: {body}"


@pytest.mark.django_db
def test_without_a_worker_it_is_503_and_names_the_worker(client, redis_url):
    purge_queues()
    started = time.monotonic()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"database": "ok", "redis": "ok", "worker": "error", "status": "error"}
    assert time.monotonic() - started < 10, "the worker ping is bounded"
    assert response["Cache-Control"].startswith("max-age=0")
    assert_leaks_nothing(response, redis_url)


@pytest.mark.django_db(transaction=True)
def test_with_a_worker_running_it_is_200(client, redis_url):
    with thread_worker(concurrency=1) as worker:
        response = client.get("/healthz")
    assert response.status_code == 200, response.content
    assert response.json() == ALL_OK
    assert_leaks_nothing(response, redis_url, worker.hostname)


@pytest.mark.django_db
def test_with_redis_down_it_is_503(client, settings, redis_url):
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"
    started = time.monotonic()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"database": "ok", "redis": "error", "worker": "error", "status": "error"}
    assert time.monotonic() - started < 10, "a dead Redis must not hang the health check"
    assert_leaks_nothing(response, settings.REDIS_URL)


@pytest.mark.django_db
def test_with_the_database_down_it_is_503_without_the_error_text(client, monkeypatch, redis_url):
    def refuse(*args, **kwargs):
        raise OperationalError('connection to server at "db.internal" (10.0.0.5), port 5432 failed')

    monkeypatch.setattr("anvia_project.health.connection.cursor", refuse)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["database"] == "error"
    assert response.json()["status"] == "error"
    assert_leaks_nothing(response, "db.internal", "10.0.0.5", "5432")


def test_it_needs_no_login_and_only_answers_reads(client):
    assert client.post("/healthz").status_code == 405
