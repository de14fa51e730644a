"""A Celery worker process keeps each thread's database connection across tasks (and checks it
before reuse); Celery's Django fix-up would otherwise close it after every task."""

from __future__ import annotations

import copy

import pytest
from celery import signals
from django.db import connections

from anvia_project import celery as project_celery


@pytest.fixture
def database_settings():
    saved = copy.deepcopy(connections.settings["default"])
    yield connections.settings["default"]
    connections.settings["default"].clear()
    connections.settings["default"].update(saved)
    signals.task_prerun.disconnect(project_celery._drop_unusable_connections)


def test_a_worker_keeps_its_connections_health_checked_and_stops_celery_closing_them(
    database_settings, settings, monkeypatch
):
    settings.ANVIA_WORKER_CONN_MAX_AGE = 300
    database_settings.setdefault("OPTIONS", {})["pool"] = {"max_size": 4}  # the web's DATABASE_POOL
    conf = {}

    signals.celeryd_init.send(sender="worker@host", instance=None, conf=_Conf(conf), options={})

    assert database_settings["CONN_MAX_AGE"] == 300
    assert database_settings["CONN_HEALTH_CHECKS"] is True
    assert "pool" not in database_settings["OPTIONS"], "a blocked run holds its connection: no bounded pool"
    assert conf["CELERY_DB_REUSE_MAX"] >= 2**31
    # Before each task, Django's own rule decides whether the thread's connection is reused.
    checked = []
    monkeypatch.setattr(connections, "all", lambda initialized_only=False: [_Connection(checked)])
    signals.task_prerun.send(sender=None, task_id="t", task=None, args=(), kwargs={})
    assert checked == ["close_if_unusable_or_obsolete"]


def test_zero_keeps_a_connection_per_task(database_settings, settings):
    settings.ANVIA_WORKER_CONN_MAX_AGE = 0
    before = dict(database_settings)
    conf = {}

    signals.celeryd_init.send(sender="worker@host", instance=None, conf=_Conf(conf), options={})

    assert dict(database_settings) == before
    assert conf == {}


class _Conf:
    def __init__(self, values: dict):
        self.values = values

    def update(self, **values) -> None:
        self.values.update(values)


class _Connection:
    def __init__(self, calls: list):
        self.calls = calls

    def close_if_unusable_or_obsolete(self) -> None:
        self.calls.append("close_if_unusable_or_obsolete")
