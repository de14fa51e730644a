"""``scripts/studio.py`` as a developer runs it: a subprocess on a scratch SQLite database, no Redis.

Shared by ``tests/studio/test_script.py`` and the browser test.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "studio.py"
BANNER = re.compile(r"Anvia Studio on (http://127\.0\.0\.1:(\d+)/) \(bound to 127\.0\.0\.1 only: ")
READY_LINE = "Ctrl-C stops Studio."
# Nothing listens here: if Studio tried to use Redis, it would fail loudly.
NO_REDIS = "redis://127.0.0.1:9/0"
START_SECONDS = 30


def studio_env(database: Path) -> dict[str, str]:
    env = {**os.environ}
    for name in ("ANVIA_DECISION_CHANNEL", "ANVIA_CHANNEL_LAYER", "DJANGO_ALLOW_ASYNC_UNSAFE", "ANVIA_TEST_RUN"):
        env.pop(name, None)
    env.update(
        DATABASE_URL=f"sqlite:///{database}",
        DJANGO_SETTINGS_MODULE="anvia_project.settings",
        REDIS_URL=NO_REDIS,
        ANVIA_MODEL="offline",
        ANVIA_STUDIO_PORT="0",
        PYTHONUNBUFFERED="1",
    )
    return env


@cache
def _seeded_template(directory: str) -> Path:
    database = Path(directory) / "seeded.sqlite3"
    # The test settings hash the demo passwords fast; the database is the same.
    env = {**studio_env(database), "DJANGO_SETTINGS_MODULE": "anvia_project.settings_test"}
    for command in (["migrate", "--no-input", "-v", "0"], ["seed_demo"]):
        subprocess.run(
            [sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True, capture_output=True, timeout=120
        )
    return database


def seeded_database(tmp_path_factory, target_dir: Path) -> Path:
    """A fresh copy of a migrated database with ``manage.py seed_demo``'s users and orders
    (migrated and seeded once per test session)."""
    template_dir = tmp_path_factory.getbasetemp() / "studio-template"
    template_dir.mkdir(exist_ok=True)
    database = target_dir / "studio.sqlite3"
    shutil.copy(_seeded_template(str(template_dir)), database)
    return database


class StudioProcess:
    """``python scripts/studio.py``; its output is collected as it comes."""

    def __init__(self, database: Path):
        self.database = database
        self.lines: list[str] = []
        self.url = ""
        self._banner = threading.Event()
        self.process = subprocess.Popen(
            [sys.executable, str(SCRIPT)],
            cwd=ROOT,
            env=studio_env(database),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._banner.wait(START_SECONDS):
            self.kill()
            raise AssertionError(f"Studio did not say it was ready:\n{self.output}")

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)
            match = BANNER.search(line)
            if match and not self.url:
                self.url = match.group(1)
            if self.url and line.strip() == READY_LINE:
                self._banner.set()
        self._banner.set()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20) -> int:
        """Send ``sig`` (Ctrl-C by default) and wait for a clean exit."""
        self.process.send_signal(sig)
        code = self.process.wait(timeout)
        self._close()
        return code

    def kill(self) -> None:
        """Make sure the process is gone (for ``finally`` blocks)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._close()

    def _close(self) -> None:
        self._reader.join(10)
        self.process.stdout.close()

    def query(self, sql: str, *params: Any) -> list[tuple]:
        """Read Studio's database directly, as the Django admin would see it."""
        with sqlite3.connect(self.database, timeout=20) as connection:
            return connection.execute(sql, params).fetchall()


class StudioClient:
    """Studio's JSON API as its page uses it: the page's token on every write."""

    def __init__(self, url: str):
        self.url = url
        self.page = urllib.request.urlopen(url, timeout=10).read().decode()  # noqa: S310 - Studio's own address
        self.token = re.search(r'<meta name="studio-token" content="([^"]+)">', self.page).group(1)

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url.rstrip("/") + path, timeout=10) as response:  # noqa: S310
            return json.loads(response.read())

    def post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(  # noqa: S310 - Studio's own http:// address
            self.url.rstrip("/") + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "X-Studio-Token": self.token},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise AssertionError(f"POST {path} answered {error.code}: {error.read().decode()}") from None


class ChangeStream:
    """Studio's server-sent events, read the way the page's EventSource reads them."""

    def __init__(self, url: str):
        host, port = url.removeprefix("http://").rstrip("/").split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=20)
        self.connection.request("GET", "/api/events")
        self.response = self.connection.getresponse()
        assert self.response.status == 200

    def next_change(self) -> dict:
        while True:
            line = self.response.readline().decode()
            if not line:
                raise AssertionError("Studio closed its event stream.")
            if line.startswith("data: "):
                return json.loads(line.removeprefix("data: "))

    def until(self, predicate, *, what: str, timeout: float = 20):
        """``predicate()`` once it holds, checking again after each change Studio announces."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"Timed out waiting for {what}.")
            self.next_change()

    def close(self) -> None:
        self.connection.close()
