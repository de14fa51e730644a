"""A real local HTTP server speaking the chat-completions protocol, scripted per test.

``ChatServer`` runs a stdlib ``ThreadingHTTPServer`` on 127.0.0.1 (a free port) in a thread. A test
queues the answers it wants (``reply``, ``reply_json``, ``reply_completion``) or answers every
request with a function of its body (``answer_with``: a model playing a part, slow or held back),
and reads back every request the server received (``requests``, ``bodies``). When the queue is
empty and there is no function, the server answers ``fallback`` (set with ``always``), else a 418
that no client retries, so a test that expected fewer requests fails loudly instead of hanging.

Use it as a context manager::

    from tests.support.chat_server import ChatServer

    @pytest.fixture
    def server():
        with ChatServer() as running:
            yield running
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class ScriptedResponse:
    """One answer: status, headers and raw body bytes."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ReceivedRequest:
    """One request the server received; ``json`` is the parsed body (``None`` if it was not JSON)."""

    method: str
    path: str
    headers: dict[str, str]
    raw: bytes
    json: Any
    client_port: int = 0  # the client's side of the connection: equal ports mean a reused connection


def completion(
    *,
    text: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    model: str = "test-model",
) -> dict[str, Any]:
    """A chat-completion body as OpenAI sends it."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": "tool_calls" if tool_calls else "stop", "logprobs": None}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def tool_call(call_id: str, name: str, arguments: dict[str, Any] | str) -> dict[str, Any]:
    """One entry of ``message.tool_calls``; ``arguments`` goes on the wire as a JSON string."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": text}}


class ChatServer:
    """A scripted chat-completions server on 127.0.0.1."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[ScriptedResponse] = deque()
        self.fallback: ScriptedResponse | None = None
        self.answer: Callable[[Any], dict[str, Any]] | None = None
        self.requests: list[ReceivedRequest] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- scripting ------------------------------------------------------------------------------

    def reply(self, status: int = 200, body: bytes | str = b"", headers: dict[str, str] | None = None) -> ChatServer:
        """Queue one raw answer (give ``Content-Type`` in ``headers``)."""
        raw = body.encode() if isinstance(body, str) else body
        with self._lock:
            self._queue.append(ScriptedResponse(status, raw, dict(headers or {})))
        return self

    def reply_json(self, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> ChatServer:
        """Queue one JSON answer."""
        return self.reply(status, json.dumps(payload), {"Content-Type": "application/json", **(headers or {})})

    def reply_completion(self, **kwargs: Any) -> ChatServer:
        """Queue one successful chat completion (see :func:`completion`)."""
        return self.reply_json(completion(**kwargs))

    def always(
        self, status: int = 200, body: bytes | str | Any = b"", headers: dict[str, str] | None = None
    ) -> ChatServer:
        """Answer this whenever the queue is empty. A non-bytes/str body is sent as JSON."""
        headers = dict(headers or {})
        if not isinstance(body, bytes | str):
            body = json.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        raw = body.encode() if isinstance(body, str) else body
        self.fallback = ScriptedResponse(status, raw, headers)
        return self

    def answer_with(self, answer: Callable[[Any], dict[str, Any]]) -> ChatServer:
        """Answer every request the queue does not cover with ``answer(body)``, a completion (see
        :func:`completion`). It runs in the request's own thread, so it may take its time."""
        self.answer = answer
        return self

    # -- what was received ----------------------------------------------------------------------

    @property
    def bodies(self) -> list[Any]:
        """The parsed JSON body of every request, in order."""
        with self._lock:
            return [r.json for r in self.requests]

    @property
    def port(self) -> int:
        assert self._httpd is not None, "the server is not running"
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> ChatServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive, as real servers do: a client that reuses pooled connections must meet them.
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                owner._handle(self)

            def do_GET(self) -> None:
                owner._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="chat-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        with self._lock:
            headers = {k.lower(): v for k, v in handler.headers.items()}
            self.requests.append(
                ReceivedRequest(handler.command, handler.path, headers, raw, parsed, handler.client_address[1])
            )
            answer = None
            if self._queue:
                response = self._queue.popleft()
            elif self.answer is not None:
                answer = self.answer
            elif self.fallback is not None:
                response = self.fallback
            else:
                response = ScriptedResponse(
                    418,
                    json.dumps({"error": {"message": "the test scripted no more responses", "type": "test"}}).encode(),
                    {"Content-Type": "application/json"},
                )
        if answer is not None:
            response = ScriptedResponse(200, json.dumps(answer(parsed)).encode(), {"Content-Type": "application/json"})
        handler.send_response(response.status)
        for name, value in response.headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(response.body)))
        handler.end_headers()
        handler.wfile.write(response.body)
