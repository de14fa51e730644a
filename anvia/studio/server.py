"""``Studio(agents).start(port=4021)``: one process serving Studio's page, its JSON API and the runs.

The server is the standard library's ``ThreadingHTTPServer``: a thread per request, one per open
page for its event stream. Studio has no login, so it binds to 127.0.0.1 unless told otherwise.
What it guards against is other web pages open in the same browser:

- a request whose ``Host`` is a name other than ``localhost`` or the host Studio was given is
  refused (a DNS-rebinding page always comes with its own domain name);
- every write carries the token of Studio's own page in ``X-Studio-Token`` and a JSON body, which
  another site cannot send without a CORS preflight that Studio never answers;
- the page may not be framed, and runs only Studio's own script.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import secrets
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from anvia.core.agent import Agent
from anvia.studio.runs import DECISION_SLICE_SECONDS, StudioError, StudioRuns, model_label
from anvia.studio.store import ApprovalStore, MemoryStore

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4021
PORT_ENV = "ANVIA_STUDIO_PORT"
WILDCARD_HOSTS = {"0.0.0.0", "::", ""}  # noqa: S104 - named so they can be warned about
SHUTDOWN_SECONDS = 10.0
MAX_BODY_BYTES = 64 * 1024
# A comment line every so often keeps an event stream open through proxies and shows a dead server.
HEARTBEAT_SECONDS = 15.0
RECONNECT_MS = 1500
ASSETS = Path(__file__).resolve().parent / "static" / "studio"
ASSET_TYPES = {
    "studio.css": "text/css; charset=utf-8",
    "studio.js": "text/javascript; charset=utf-8",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class Studio:
    """A local approval UI for agents: chat with them, watch each run, approve or reject their
    protected tool calls. It reads each tool's approval metadata; no hook in your code.

    ``store`` keeps the approval requests and decisions (``MemoryStore()`` unless you pass one;
    see ``anvia.studio.store.ApprovalStore``). ``host`` is ``127.0.0.1`` unless you say otherwise:
    Studio has no login, so anyone who can reach it can chat as your users and approve tool calls.
    Another host prints a warning.
    """

    def __init__(
        self,
        agents: Iterable[Agent],
        *,
        store: ApprovalStore | None = None,
        host: str = DEFAULT_HOST,
        out: TextIO | None = None,
        decision_slice: float = DECISION_SLICE_SECONDS,
    ):
        self.store = store if store is not None else MemoryStore()
        self.runs = StudioRuns(agents, self.store, decision_slice=decision_slice)
        self.agents = list(self.runs.agents.values())
        self.host = host.strip("[]")
        self.out = out or sys.stdout
        self._running: RunningStudio | None = None

    def start(self, port: int = DEFAULT_PORT) -> None:
        """Serve until Ctrl-C (or SIGTERM); blocks. ``port=0`` takes any free port, and
        ``$ANVIA_STUDIO_PORT`` overrides ``port`` (so a script need not change to move it).
        The first line printed is Studio's address. On stop, the requests of runs still
        waiting for a decision are cancelled."""
        port = _port(os.environ.get(PORT_ENV) or port)
        try:
            running = self.serve(port)
        except OSError as error:
            raise SystemExit(
                f"Anvia Studio did not start. Couldn't listen on {self.host}:{port}: {error.strerror or error}. "
                f"Pick another port with .start(port=...) or {PORT_ENV}=..."
            ) from None
        self._running = running
        self._say(_banner(self.host, running.port))
        for agent in self.agents:
            tools = ", ".join(agent.tools) or "none"
            self._say(f"  agent      {agent.name} ({model_label(agent)}; tools: {tools})")
        self._say(f"  approvals  {self.store}")
        self._say(f'  reviewer   decisions made in Studio are recorded as "{self.store.reviewer}"')
        users = self.runs.users()
        if users:
            self._say(f"  acting as  {users[0].label} by default (change it in the page)")
        self._say("  Ctrl-C stops Studio.")
        try:
            with _interrupt_on_sigterm():
                running.wait()
        except KeyboardInterrupt:
            pass
        finally:
            still_open = self.runs.open_runs()
            if still_open:
                self._say(
                    f"Stopping: {still_open} run(s) still open; requests still waiting for a decision are cancelled."
                )
            else:
                self._say("Stopping.")
            if not running.stop(SHUTDOWN_SECONDS):
                self._say("Some runs were still busy (in a model call?) and were left unfinished.")
        self._say("Anvia Studio stopped.")

    def stop(self) -> None:
        """Make ``start()`` return, as Ctrl-C does, from any thread."""
        if self._running is not None:
            self._running.server.shutdown()

    def serve(self, port: int = 0) -> RunningStudio:
        """Start serving in background threads and return at once (tests, notebooks); ``stop()``
        the result, or use it as a context manager. ``OSError`` when the port is taken."""
        site = StudioSite(self.runs, host=self.host)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        server_class = type("StudioHTTPServer", (ThreadingHTTPServer,), {"address_family": family})
        server = server_class((self.host, port), site.handler_class())
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="studio-http")
        thread.daemon = True
        thread.start()
        return RunningStudio(server=server, thread=thread, runs=self.runs, host=self.host)

    def _say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()


@dataclass
class RunningStudio:
    """A Studio serving in background threads."""

    server: ThreadingHTTPServer
    thread: threading.Thread
    runs: StudioRuns
    host: str
    stopped: bool = field(default=False, init=False)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}/"

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C reaches the caller)."""
        while self.thread.is_alive():
            self.thread.join(0.5)

    def stop(self, timeout: float = SHUTDOWN_SECONDS) -> bool:
        """End the pages' event streams, stop serving, then stop the runs; ``False`` if a run
        was still busy at ``timeout``."""
        if self.stopped:
            return True
        self.stopped = True
        self.runs.changes.close()
        self.server.shutdown()
        self.server.server_close()
        return self.runs.shutdown(timeout)

    def __enter__(self) -> RunningStudio:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(data: Any, status: int = 200) -> Reply:
    return Reply(status, json.dumps(data).encode())


def error_reply(message: str, status: int, *, field_name: str | None = None) -> Reply:
    body = {"error": message, **({"field": field_name} if field_name else {})}
    return json_reply(body, status)


class StudioSite:
    """Studio's page, its JSON API and its event stream, bound to one run manager. Thin: parse,
    call the run manager, answer JSON."""

    def __init__(self, runs: StudioRuns, *, host: str = DEFAULT_HOST):
        self.runs = runs
        self.host = host
        self.token = secrets.token_urlsafe(24)
        self.notice = "" if _is_loopback(host) else _exposed_warning(host)
        self.asset_version = str(int(max((ASSETS / name).stat().st_mtime for name in ASSET_TYPES)))
        self.routes: list[tuple[str, re.Pattern[str], Callable[..., Reply]]] = [
            ("GET", re.compile(r"/"), self.index),
            ("GET", re.compile(r"/assets/([\w.]+)"), self.asset),
            ("GET", re.compile(r"/api/studio"), self.studio),
            ("GET", re.compile(r"/api/chats"), self.chats),
            ("POST", re.compile(r"/api/chats"), self.chat_start),
            ("GET", re.compile(r"/api/chats/(\d+)"), self.chat),
            ("POST", re.compile(r"/api/chats/(\d+)/messages"), self.chat_send),
            ("GET", re.compile(r"/api/approvals"), self.approvals),
            ("POST", re.compile(r"/api/approvals/(\d+)/decision"), self.decision),
            # Answered as a stream by the request handler; listed so that other methods get a 405.
            ("GET", re.compile(r"/api/events"), self.approvals),
        ]

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        site = self

        class Handler(StudioRequestHandler):
            pass

        Handler.site = site
        return Handler

    # -- the page ----------------------------------------------------------------------------

    def index(self, body: Any) -> Reply:
        html = (ASSETS / "index.html").read_text().replace("{{version}}", self.asset_version)
        return Reply(200, html.replace("{{token}}", self.token).encode(), "text/html; charset=utf-8")

    def asset(self, body: Any, name: str) -> Reply:
        content_type = ASSET_TYPES.get(name)
        if content_type is None:
            return error_reply(f"Studio has no asset {name!r}.", 404)
        return Reply(200, (ASSETS / name).read_bytes(), content_type, {"Cache-Control": "no-cache"})

    def studio(self, body: Any) -> Reply:
        """What the page needs before anything else: agents and their tools, who to act as."""
        return json_reply(
            {
                "agents": [_agent_summary(agent) for agent in self.runs.agents.values()],
                "users": [{"id": user.id, "label": user.label, "note": user.note} for user in self.runs.users()],
                "reviewer": self.runs.store.reviewer,
                "store": str(self.runs.store),
                "notice": self.notice,
            }
        )

    # -- chats -------------------------------------------------------------------------------

    def chats(self, body: Any) -> Reply:
        return json_reply({"chats": self.runs.chat_list()})

    def chat_start(self, body: dict[str, Any]) -> Reply:
        chat = self.runs.chat_start(
            agent_name=body.get("agent"), user_id=body.get("user_id"), message=body.get("message")
        )
        return json_reply({"chat": self.runs.chat_detail(chat.id)}, 201)

    def chat(self, body: Any, chat_id: str) -> Reply:
        return json_reply({"chat": self.runs.chat_detail(int(chat_id))})

    def chat_send(self, body: dict[str, Any], chat_id: str) -> Reply:
        chat = self.runs.chat_send(chat_id=int(chat_id), message=body.get("message"))
        return json_reply({"chat": self.runs.chat_detail(chat.id)}, 201)

    # -- approvals ---------------------------------------------------------------------------

    def approvals(self, body: Any) -> Reply:
        return json_reply(self.runs.approvals_panel())

    def decision(self, body: dict[str, Any], approval_id: str) -> Reply:
        """``{"action": "approve" | "reject" | "respond" | "terminate", "reason": str, "response": str}``;
        ``{"approved": bool}`` is short for approve / reject."""
        action = body.get("action")
        if action is not None and not isinstance(action, str):
            raise StudioError("Say the action as text: approve, reject, respond or terminate.", field="action")
        approved = body.get("approved")
        if approved is not None and not isinstance(approved, bool):
            raise StudioError("Say approved: true or false.", field="approved")
        if action is None and approved is None:
            raise StudioError("Say what to do: action approve, reject, respond or terminate.", field="action")
        text = {}
        for name in ("reason", "response"):
            text[name] = body.get(name, "")
            if not isinstance(text[name], str):
                raise StudioError(f"The {name} must be text.", field=name)
        self.runs.decide(approval_id=int(approval_id), action=action, approved=approved, **text)
        return json_reply(self.runs.approvals_panel())

    # -- routing and checks ------------------------------------------------------------------

    def route(self, method: str, path: str) -> tuple[Callable[..., Reply], tuple[str, ...]] | Reply:
        allowed = []
        for route_method, pattern, view in self.routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if route_method == method:
                return view, match.groups()
            allowed.append(route_method)
        if allowed:
            reply = error_reply(f"Use {', '.join(allowed)}.", 405)
            reply.headers["Allow"] = ", ".join(allowed)
            return reply
        return error_reply(f"Studio has nothing at {path}.", 404)

    def host_refusal(self, host_header: str | None) -> Reply | None:
        """A 400 for a ``Host`` that names a domain other than localhost, this machine or Studio's host."""
        name = urlsplit(f"//{host_header or ''}").hostname or ""
        if name in ("localhost", self.host.lower(), socket.gethostname().lower()) or _is_ip(name):
            return None
        return error_reply(
            f"Studio does not answer to the host {host_header!r}; open it by IP address or as localhost.", 400
        )

    def write_refusal(self, headers) -> Reply | None:
        """A 403 for a write that does not come from Studio's own page."""
        origin = headers.get("Origin")
        if origin and urlsplit(origin).netloc != headers.get("Host", ""):
            return error_reply("Studio accepts changes only from its own page.", 403)
        if not secrets.compare_digest(headers.get("X-Studio-Token", ""), self.token):
            return error_reply("This request lacks the token of Studio's page: reload the page and try again.", 403)
        return None


class StudioRequestHandler(BaseHTTPRequestHandler):
    """One HTTP request to a ``StudioSite`` (its ``site``)."""

    site: StudioSite
    server_version = "AnviaStudio"
    sys_version = ""

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: Studio's terminal is for what Studio has to say."""

    def _handle(self, method: str) -> None:
        try:
            path = urlsplit(self.path).path
            refused = self.site.host_refusal(self.headers.get("Host"))
            if refused:
                self._send(refused)
            elif path == "/api/events" and method == "GET":
                self._events()
            else:
                self._send(self._reply(method, path))
        finally:
            self.site.runs.store.thread_done()

    def _reply(self, method: str, path: str) -> Reply:
        found = self.site.route(method, path)
        if isinstance(found, Reply):
            return found
        view, arguments = found
        body: Any = None
        if method == "POST":
            refused = self.site.write_refusal(self.headers)
            if refused:
                return refused
            body = self._json_body()
            if isinstance(body, Reply):
                return body
        try:
            return view(body, *arguments)
        except StudioError as error:
            return error_reply(str(error), error.status, field_name=error.field)

    def _json_body(self) -> dict[str, Any] | Reply:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            return error_reply(f"Send a JSON object of at most {MAX_BODY_BYTES // 1024} KB.", 413)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except (ValueError, RecursionError):  # invalid JSON or text; nested thousands deep
            body = None
        if not isinstance(body, dict):
            return error_reply("Send a JSON object.", 400)
        return body

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        content_type = reply.content_type
        if content_type == "application/json":
            content_type += "; charset=utf-8"
            self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in {**SECURITY_HEADERS, **reply.headers}.items():
            self.send_header(name, value)
        self.end_headers()
        with contextlib.suppress(ConnectionError):
            self.wfile.write(reply.body)

    def _events(self) -> None:
        """Server-sent events: one message per batch of changes, naming the chats that changed.
        The page then reads what it shows again."""
        changes = self.site.runs.changes
        after = changes.last
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.close_connection = True
        try:
            self._write(f"retry: {RECONNECT_MS}\n: connected\n\n")
            while not changes.closed:
                batch = changes.wait(after, HEARTBEAT_SECONDS)
                if changes.closed:
                    return  # Studio is stopping: end the response; the page reconnects later
                if not batch:
                    self._write(": still here\n\n")
                    continue
                after = batch[-1][0]
                self._write(f"id: {after}\ndata: {json.dumps(_summary(batch))}\n\n")
        except (ConnectionError, TimeoutError):
            return  # the page went away

    def _write(self, text: str) -> None:
        self.wfile.write(text.encode())
        self.wfile.flush()


def _summary(batch: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    return {
        "chats": sorted({c["chat_id"] for _, c in batch if c.get("chat_id") is not None}),
        "approvals": any(c.get("approvals") for _, c in batch),
        "everything": any(c.get("everything") for _, c in batch),
    }


def _agent_summary(agent: Agent) -> dict[str, Any]:
    """An agent as the page shows it, with what each tool's approval metadata says."""
    return {
        "name": agent.name,
        "description": agent.description,
        "model": model_label(agent),
        "tools": [
            {
                "name": tool.name,
                "description": tool.description,
                "approval": "none" if tool.approval is None else "always" if tool.approval.when is None else "rule",
                "reject_message": tool.approval.reject_message if tool.approval else None,
            }
            for tool in agent.tools.values()
        ],
    }


@contextlib.contextmanager
def _interrupt_on_sigterm() -> Iterator[None]:
    """SIGTERM stops Studio as Ctrl-C does (only the main thread receives signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _banner(host: str, port: int) -> str:
    url = f"http://{_url_host(host)}:{port}/"
    if _is_loopback(host):
        return f"Anvia Studio on {url} (bound to {host} only: other machines cannot reach it)"
    return f"Anvia Studio on {url}\n{_exposed_warning(host)}"


def _exposed_warning(host: str) -> str:
    where = "every network interface" if host in WILDCARD_HOSTS else host
    return (
        f"WARNING: Studio is bound to {where}, not 127.0.0.1. It has no login: anyone who can reach it "
        "can chat as your users and approve tool calls."
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _port(value: object) -> int:
    try:
        port = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise SystemExit(f"Studio's port must be a number from 0 to 65535, not {value!r}.") from None
    if not 0 <= port <= 65535:
        raise SystemExit(f"Studio's port must be a number from 0 to 65535, not {port}.")
    return port
