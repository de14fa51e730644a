"""``Studio(agents).start(port=4021)``: one process serving the page, its API and the runs."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO

from django.conf import settings

from anvia import Agent
from anvia.studio.asgi import StudioHandler
from anvia.studio.bootstrap import database_migrate
from anvia.studio.runs import StudioRuns, agents_by_name
from anvia.studio.selectors import model_label
from anvia.studio.users import REVIEWER_USERNAME, acting_user_default
from anvia.studio.views import StudioSite

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4021
PORT_ENV = "ANVIA_STUDIO_PORT"
WILDCARD_HOSTS = {"0.0.0.0", "::", ""}  # noqa: S104 - named so they can be warned about
SHUTDOWN_SECONDS = 10.0
# How long open pages get to end their event streams before the server stops.
STREAM_CLOSE_SECONDS = 0.3


class Studio:
    """A local approval UI for agents: chat with them, watch each run, approve or reject their
    protected tool calls. It reads each tool's approval metadata; no hook in your code.

    ``host`` is ``127.0.0.1`` unless you say otherwise: Studio has no login, so anyone who can
    reach it can chat as your users and approve tool calls. Another host prints a warning.
    """

    def __init__(self, agents: Iterable[Agent], *, host: str = DEFAULT_HOST, out: TextIO | None = None):
        self.agents = list(agents)
        agents_by_name(self.agents)
        self.host = host.strip("[]")
        self.out = out or sys.stdout
        self._started = False

    def start(self, port: int = DEFAULT_PORT) -> None:
        """Serve until Ctrl-C (or SIGTERM); blocks. ``port=0`` takes any free port, and
        ``$ANVIA_STUDIO_PORT`` overrides ``port`` (so a script need not change to move it).

        On start it migrates the database if needed, makes sure the ``studio`` reviewer exists,
        and resumes runs an earlier Studio left waiting. On stop, runs still waiting for a
        decision are suspended and resume next time.
        """
        if self._started:
            raise RuntimeError("A Studio serves once per process (Twisted's reactor cannot restart).")
        self._started = True
        port = _port(os.environ.get(PORT_ENV) or port)
        migrated = database_migrate()
        runs = StudioRuns(self.agents)
        runs.reviewer()
        acting = acting_user_default(create=True)
        resumed = runs.resume_left_runs()
        loopback = _is_loopback(self.host)
        if not loopback and self.host not in WILDCARD_HOSTS and self.host not in settings.ALLOWED_HOSTS:
            settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, self.host]
        site = StudioSite(runs, notice="" if loopback else _exposed_warning(self.host))

        def listening(host: str, bound_port: int) -> None:
            self._say(_banner(self.host, bound_port, loopback))
            for agent in self.agents:
                self._say(
                    f"  agent      {agent.name} ({model_label(agent)}; tools: {', '.join(agent.tools) or 'none'})"
                )
            self._say(f'  reviewer   decisions made in Studio are recorded as user "{REVIEWER_USERNAME}"')
            self._say(f"  acting as  {acting.get_username()} by default (change it in the page)")
            self._say(f"  database   {_database_label()}")
            if migrated:
                self._say(f"  migrated   {len(migrated)} migration(s) applied")
            if resumed:
                self._say(f"  resumed    {len(resumed)} run(s) an earlier Studio left waiting")
            self._say("  Ctrl-C stops Studio.")

        server = _make_server(StudioHandler(site), _endpoint(self.host, port), listening)
        with _stop_on_signals(lambda: self._stop(server, runs)):
            try:
                server.run()
            finally:
                if not runs.shutdown(SHUTDOWN_SECONDS):
                    self._say("Some runs were still busy (in a model call?); they resume when Studio starts again.")
        if server.failure:
            raise SystemExit(
                f"Anvia Studio did not start. {server.failure} "
                f"Pick another port with .start(port=...) or {PORT_ENV}=..."
            )
        self._say("Anvia Studio stopped.")

    def _stop(self, server, runs: StudioRuns) -> None:
        """Ctrl-C / SIGTERM, on the server's thread: end the pages' event streams, then stop.
        Ending them first lets each response finish instead of being cancelled mid-stream."""
        from twisted.internet import reactor

        if runs.changes.closed:
            reactor.callLater(0, server.stop)  # a second Ctrl-C: stop now
            return
        open_runs = runs.open_runs()
        if open_runs:
            self._say(
                f"Stopping: {open_runs} run(s) still open; those waiting for a decision are suspended "
                "and resume when Studio starts again."
            )
        else:
            self._say("Stopping.")
        runs.changes.close()
        reactor.callLater(STREAM_CLOSE_SECONDS, server.stop)

    def _say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()


def _make_server(application, endpoint: str, on_listening: Callable[[str, int], None]):
    # Importing daphne.server installs Twisted's asyncio reactor; do it only when serving.
    from daphne.server import Server

    class StudioServer(Server):
        failure: str | None = None

        def listen_success(self, port):
            super().listen_success(port)
            host = port.getHost()
            on_listening(host.host, host.port)

        def listen_error(self, failure):
            self.failure = failure.getErrorMessage()
            super().listen_error(failure)

    # Studio installs its own Ctrl-C handling (see ``_stop_on_signals``).
    return StudioServer(application=application, endpoints=[endpoint], signal_handlers=False, verbosity=0)


@contextlib.contextmanager
def _stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """Route SIGINT and SIGTERM to ``stop`` on the reactor's thread while serving."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals only reach the main thread; whoever started us there stops us
        return
    from twisted.internet import reactor

    def handle(signum, frame):
        reactor.callFromThread(stop)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _banner(host: str, port: int, loopback: bool) -> str:
    url = f"http://{_url_host(host)}:{port}/"
    if loopback:
        return f"Anvia Studio on {url} (bound to {host} only: other machines cannot reach it)"
    return f"Anvia Studio on {url}\n{_exposed_warning(host)}"


def _exposed_warning(host: str) -> str:
    where = "every network interface" if host in WILDCARD_HOSTS else host
    warning = (
        f"WARNING: Studio is bound to {where}, not 127.0.0.1. It has no login: anyone who can reach it "
        "can chat as your users and approve tool calls."
    )
    if host in WILDCARD_HOSTS:
        warning += " Requests must name a host in DJANGO_ALLOWED_HOSTS."
    return warning


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _endpoint(host: str, port: int) -> str:
    if ":" in host:
        return f"tcp6:port={port}:interface={host.replace(':', chr(92) + ':')}"
    return f"tcp:port={port}:interface={host}"


def _port(value: object) -> int:
    try:
        port = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise SystemExit(f"Studio's port must be a number from 0 to 65535, not {value!r}.") from None
    if not 0 <= port <= 65535:
        raise SystemExit(f"Studio's port must be a number from 0 to 65535, not {port}.")
    return port


def _database_label() -> str:
    database = settings.DATABASES["default"]
    engine = database["ENGINE"].rsplit(".", 1)[-1]
    where = f" on {database['HOST']}" if database.get("HOST") else ""
    return f"{engine} {database['NAME']}{where}"
