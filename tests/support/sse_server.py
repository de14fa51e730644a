"""A real local chat-completions server that streams its answers (server-sent events), as scripted.

``ChatServer`` answers whole bodies; this one writes each answer chunk by chunk over HTTP/1.1
chunked encoding, the way OpenAI and llama.cpp stream: ``data: {chunk}`` events, then
``data: [DONE]``. A test can pause between chunks, hold the rest of an answer until it says so,
or cut the connection in the middle of the body (a server that died mid-answer)::

    with StreamingChatServer() as server:
        server.stream(text_chunks(["Hel", "lo", "!"]))
        server.stream(text_chunks(["Hi"]), break_after=1)  # the connection drops after 1 event
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def chunk(
    *,
    content: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    finish_reason: str | None = None,
    role: str | None = None,
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` with one choice."""
    delta: dict[str, Any] = {}
    if role:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-stream",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "test-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
    }


def usage_chunk(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """The last chunk OpenAI sends with ``stream_options.include_usage``: no choices, the usage."""
    return {
        "id": "chatcmpl-stream",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "test-model",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def text_chunks(pieces: list[str], *, finish_reason: str | None = "stop") -> list[dict[str, Any]]:
    """A streamed text answer: a role chunk, one chunk per piece, the finishing chunk."""
    chunks = [chunk(role="assistant", content="")]
    chunks += [chunk(content=piece) for piece in pieces]
    if finish_reason:
        chunks.append(chunk(finish_reason=finish_reason))
    return chunks


def call_piece(
    index: int | None, *, id: str | None = None, name: str | None = None, arguments: str | None = None
) -> dict[str, Any]:
    """One piece of a streamed tool call (``delta.tool_calls[i]``)."""
    piece: dict[str, Any] = {}
    if index is not None:
        piece["index"] = index
    if id is not None:
        piece["id"] = id
        piece["type"] = "function"
    function = {}
    if name is not None:
        function["name"] = name
    if arguments is not None:
        function["arguments"] = arguments
    if function:
        piece["function"] = function
    return piece


@dataclass
class StreamedAnswer:
    """One scripted answer: ``events`` (each a chunk dict, or raw ``bytes`` sent as they are)."""

    events: list[Any]
    done: bool = True
    pause: float = 0.0
    break_after: int | None = None
    hold_after: int | None = None
    released: threading.Event = field(default_factory=threading.Event)
    content_type: str = "text/event-stream"


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a connection the script cut (break_after) is not news


class StreamingChatServer:
    """A scripted, streaming chat-completions server on 127.0.0.1 (a free port)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[StreamedAnswer] = deque()
        self.bodies: list[Any] = []
        self._httpd: _QuietServer | None = None
        self._thread: threading.Thread | None = None

    def stream(
        self,
        events: list[Any],
        *,
        done: bool = True,
        pause: float = 0.0,
        break_after: int | None = None,
        hold_after: int | None = None,
    ) -> StreamedAnswer:
        """Queue one streamed answer. ``pause`` seconds between events; ``break_after=n`` closes
        the connection mid-body after n events; ``hold_after=n`` waits after n events until the
        returned answer's ``released`` is set."""
        answer = StreamedAnswer(list(events), done, pause, break_after, hold_after)
        with self._lock:
            self._queue.append(answer)
        return answer

    def reply_json(self, payload: Any) -> None:
        """Queue one plain JSON answer, as a server that ignores ``"stream": true`` sends."""
        answer = StreamedAnswer([json.dumps(payload).encode()], done=False, content_type="application/json")
        with self._lock:
            self._queue.append(answer)

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "the server is not running"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> StreamingChatServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                owner._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="sse-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            for answer in self._queue:
                answer.released.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> StreamingChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        with self._lock:
            self.bodies.append(json.loads(raw) if raw else None)
            answer = self._queue.popleft() if self._queue else None
        if answer is None:
            body = json.dumps({"error": {"message": "the test scripted no more responses"}}).encode()
            handler.send_response(418)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
            return
        handler.send_response(200)
        handler.send_header("Content-Type", answer.content_type)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        wire = [e if isinstance(e, bytes) else b"data: " + json.dumps(e).encode() + b"\n\n" for e in answer.events]
        if answer.done:
            wire.append(b"data: [DONE]\n\n")
        for number, data in enumerate(wire):
            if answer.break_after is not None and number == answer.break_after:
                handler.wfile.flush()
                handler.close_connection = True
                handler.connection.shutdown(2)  # mid-body: no terminating chunk
                return
            if answer.hold_after is not None and number == answer.hold_after:
                answer.released.wait(timeout=30)
            elif number and answer.pause:
                threading.Event().wait(answer.pause)
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            handler.wfile.flush()
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()
