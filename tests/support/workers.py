"""Real Celery workers for tests: one in a thread of the test process, or one in its own process.

* ``thread_worker()`` runs ``celery.contrib.testing.worker.start_worker`` (threads pool) inside
  the test process: fast to start, and it sees the test's settings overrides.
* ``WorkerProcess`` runs ``celery -A anvia_project worker`` as a child process in its own process
  group, on the test database, so a test can SIGKILL it like a crashed machine.

Both consume the broker keys of this test run only (``settings_test`` gives every run its own
broker key prefix), so suites sharing one Redis never take each other's tasks.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun
from django.conf import settings
from django.db import connection, connections

from anvia_project.celery import app
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
QUEUES = ("agents", "default")


def purge_queues() -> None:
    """Drop tasks an earlier test of this run left in the queues (their rows are gone)."""
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        for queue in QUEUES:
            with contextlib.suppress(Exception):
                channel.queue_purge(queue)


def forget_unacked() -> None:
    """Drop the unacknowledged messages of killed workers: with this run's prefix nobody would
    ever restore them, and a shared Redis should not keep them forever."""
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        with channel.conn_or_acquire() as client:
            client.delete(channel.unacked_key, channel.unacked_index_key)


def _close_thread_connections(**kwargs) -> None:
    # The CLI worker's Django fixup closes each task's connections; an embedded worker has none.
    connections.close_all()


@contextlib.contextmanager
def thread_worker(*, concurrency: int = 8, shutdown_timeout: float = 30.0) -> Iterator[Any]:
    """A real worker (threads pool) in this process, consuming ``agents`` and ``default``.

    Its threads use the test database, so use it in ``transaction=True`` tests (a fixture may
    span a module: it touches the database only while a test has a task running). Every task
    must have finished before it stops: a blocked run delays the stop.
    """
    purge_queues()
    task_postrun.connect(_close_thread_connections, weak=False, dispatch_uid="tests.close_thread_connections")
    hijack = app.conf.worker_hijack_root_logger
    app.conf.worker_hijack_root_logger = False  # keep pytest's log capture
    try:
        with (
            start_worker(
                app,
                pool="threads",
                concurrency=concurrency,
                perform_ping_check=False,  # its ping task needs a result backend; we have none
                loglevel="WARNING",
                shutdown_timeout=shutdown_timeout,
                queues=list(QUEUES),
                hostname=f"thread-{uuid.uuid4().hex[:8]}@anvia-test",
            ) as worker
        ):
            yield worker
    finally:
        app.conf.worker_hijack_root_logger = hijack
        task_postrun.disconnect(dispatch_uid="tests.close_thread_connections")


def database_url_for_workers() -> str:
    """A ``DATABASE_URL`` naming the database this test uses (the test database)."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        name = str(db["NAME"])
        if name == ":memory:" or name.startswith("file:"):
            raise RuntimeError("A worker process cannot share an in-memory SQLite database.")
        return f"sqlite:///{Path(name).resolve()}"
    if db["ENGINE"] == "django.db.backends.postgresql":
        user = quote(db.get("USER") or "", safe="")
        password = quote(db.get("PASSWORD") or "", safe="")
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        host = db.get("HOST") or "127.0.0.1"
        port = db.get("PORT") or "5432"
        return f"postgres://{auth}{host}:{port}/{quote(db['NAME'], safe='')}"
    raise RuntimeError(f"No worker process support for {db['ENGINE']}.")


class WorkerProcess:
    """``celery -A anvia_project worker -Q agents,default -P threads`` on the test database."""

    def __init__(self, name: str, log_dir: Path, *, concurrency: int = 4, env: dict[str, str] | None = None):
        self.nodename = f"{name}-{uuid.uuid4().hex[:6]}@anvia-test"
        self.log_path = log_dir / f"{name}.log"
        self.concurrency = concurrency
        self.extra_env = env or {}
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0
        self.ready_after = 0.0

    def environment(self) -> dict[str, str]:
        env = {
            **os.environ,
            # settings_test reads the same ANVIA_TEST_RUN, so the worker uses this run's broker
            # keys; DATABASE_URL points its (non-test) DATABASES at the test database.
            "DJANGO_SETTINGS_MODULE": "anvia_project.settings_test",
            "ANVIA_TEST_RUN": os.environ["ANVIA_TEST_RUN"],
            "DATABASE_URL": database_url_for_workers(),
            "REDIS_URL": settings.REDIS_URL,
            "ANVIA_MODEL": "offline",
            "ANVIA_DECISION_CHANNEL": "redis",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        env.pop("PYTEST_CURRENT_TEST", None)
        return env

    def start(self) -> WorkerProcess:
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "anvia_project",
            "worker",
            "-Q",
            ",".join(QUEUES),
            "-P",
            "threads",
            "-c",
            str(self.concurrency),
            "-n",
            self.nodename,
            "-l",
            "INFO",
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
        ]
        self.started_at = time.monotonic()
        with self.log_path.open("ab") as log:
            # Its own process group: a kill reaches the worker and anything it started.
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=self.environment(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, timeout: float = 45.0) -> WorkerProcess:
        """Block until the worker answers a ping (its consumers are up)."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive:
                raise AssertionError(
                    f"Worker {self.nodename} exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if app.control.ping(destination=[self.nodename], timeout=0.5, limit=1):
                self.ready_after = time.monotonic() - self.started_at
                return self
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"Worker {self.nodename} did not answer a ping in {timeout:.0f} s:\n{self.log_tail()}"
                )

    def kill(self) -> None:
        """SIGKILL the worker's whole process group: no shutdown, no acknowledgement, like a crash."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)

    def pause(self) -> None:
        """SIGSTOP the worker's process group: a stalled machine (its heartbeat stops too)."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after ``pause()``."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGCONT)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


class BeatProcess(WorkerProcess):
    """``celery -A anvia_project beat``: sends the periodic tasks (the orphan sweep) of this run."""

    def start(self) -> BeatProcess:
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "anvia_project",
            "beat",
            "-s",
            str(self.log_path.with_suffix(".schedule")),
            "--pidfile=",
            "-l",
            "INFO",
        ]
        self.started_at = time.monotonic()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=self.environment(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    def wait_ready(self, timeout: float = 45.0) -> BeatProcess:
        """Block until beat has sent its first tasks."""
        wait_until(
            lambda: "Sending due task" in self.log_text() or not self.alive,
            timeout=timeout,
            message="beat sent nothing",
            describe=self.log_tail,
        )
        if not self.alive:
            raise AssertionError(f"beat exited with {self.process.returncode}:\n{self.log_tail()}")
        return self


@contextlib.contextmanager
def worker_processes(log_dir: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """A factory of ``WorkerProcess``; every one started is killed on exit and its log printed
    (pytest shows captured output only for a test that failed). ``make(name, beat=True)``
    starts a beat process instead of a worker."""
    started: list[WorkerProcess] = []

    def make(name: str, *, beat: bool = False, **kwargs) -> WorkerProcess:
        worker = (BeatProcess if beat else WorkerProcess)(name, log_dir, **kwargs)
        started.append(worker)
        return worker.start()

    try:
        yield make
    finally:
        for worker in started:
            worker.kill()
        forget_unacked()
        for worker in started:
            print(f"\n===== log of worker {worker.nodename} ({worker.log_path}) =====\n{worker.log_text()}")  # noqa: T201
