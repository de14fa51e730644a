"""Studio's page, its JSON API and its event stream. Thin: parse, call the run manager or a selector, render.

Studio has no login: it trusts whoever can reach it, which is why it binds to 127.0.0.1. What it
does guard against is other web pages open in the same browser: every write needs the CSRF token
from Studio's own page, the Host header must be an allowed host (no DNS rebinding), and nothing
may frame it (see ``anvia.studio.asgi``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.middleware.csrf import get_token
from django.template import Context, Engine
from django.urls import path
from django.views.decorators.csrf import csrf_protect, ensure_csrf_cookie

from anvia.studio.runs import StudioError, StudioRuns
from anvia.studio.selectors import agent_summary, approvals_panel, chat_detail, chat_list
from anvia.studio.users import REVIEWER_USERNAME, acting_user_default, acting_users

HERE = Path(__file__).resolve().parent
ASSETS = HERE / "static" / "studio"
ASSET_TYPES = {"studio.css": "text/css; charset=utf-8", "studio.js": "text/javascript; charset=utf-8"}
TEMPLATES = Engine(dirs=[str(HERE / "templates")], autoescape=True)
# A comment line every so often keeps the stream open through proxies and shows a dead server.
HEARTBEAT_SECONDS = 15.0
RECONNECT_MS = 1500


class StudioSite:
    """Studio's urlconf (``urlpatterns``), bound to one run manager. The Studio ASGI handler
    routes every request here, whatever the project's ``ROOT_URLCONF`` says."""

    def __init__(self, runs: StudioRuns, *, notice: str = ""):
        self.runs = runs
        self.notice = notice
        self.asset_version = str(int(max((ASSETS / name).stat().st_mtime for name in ASSET_TYPES)))
        self.urlpatterns = [
            path("", ensure_csrf_cookie(self.index), name="studio-index"),
            path("assets/<str:name>", self.asset, name="studio-asset"),
            path("api/chats", csrf_protect(self.chats), name="studio-chats"),
            path("api/chats/<int:conversation_id>", self.chat, name="studio-chat"),
            path("api/chats/<int:conversation_id>/messages", csrf_protect(self.chat_messages), name="studio-send"),
            path("api/approvals", self.approvals, name="studio-approvals"),
            path("api/approvals/<int:approval_id>/decision", csrf_protect(self.decision), name="studio-decide"),
            path("api/events", self.events, name="studio-events"),
        ]

    # -- the page ----------------------------------------------------------------------------

    def index(self, request: HttpRequest) -> HttpResponse:
        if request.method != "GET":
            return _method_not_allowed("GET")
        agents = [agent_summary(agent) for agent in self.runs.agents.values()]
        default_user = acting_user_default()
        users = [{"id": u.pk, "username": u.get_username(), "staff": u.is_staff} for u in acting_users()]
        context = {
            "agents": agents,
            "users": users,
            "default_user_id": default_user.pk if default_user else None,
            "reviewer": REVIEWER_USERNAME,
            "notice": self.notice,
            "csrf_token": get_token(request),
            "version": self.asset_version,
            "boot": {"agents": agents},
        }
        html = TEMPLATES.get_template("studio/index.html").render(Context(context))
        return HttpResponse(html)

    def asset(self, request: HttpRequest, name: str) -> HttpResponse:
        content_type = ASSET_TYPES.get(name)
        if content_type is None:
            return HttpResponse("Not found.", status=404, content_type="text/plain")
        response = HttpResponse((ASSETS / name).read_bytes(), content_type=content_type)
        response["Cache-Control"] = "no-cache"
        return response

    # -- chats -------------------------------------------------------------------------------

    def chats(self, request: HttpRequest) -> HttpResponse:
        if request.method == "GET":
            return JsonResponse({"chats": chat_list(agents=self.runs.agents)})
        if request.method != "POST":
            return _method_not_allowed("GET, POST")
        body = _json_body(request)
        if isinstance(body, HttpResponse):
            return body
        try:
            run = self.runs.chat_start(
                agent_name=str(body.get("agent", "")), user_id=_int(body.get("user_id")), message=body.get("message")
            )
        except StudioError as error:
            return _error(error)
        return JsonResponse(
            {"chat": chat_detail(conversation_id=run.conversation_id, agents=self.runs.agents)}, status=201
        )

    def chat(self, request: HttpRequest, conversation_id: int) -> HttpResponse:
        if request.method != "GET":
            return _method_not_allowed("GET")
        detail = chat_detail(conversation_id=conversation_id, agents=self.runs.agents)
        if detail is None:
            return JsonResponse({"error": f"There is no Studio chat #{conversation_id}."}, status=404)
        return JsonResponse({"chat": detail})

    def chat_messages(self, request: HttpRequest, conversation_id: int) -> HttpResponse:
        if request.method != "POST":
            return _method_not_allowed("POST")
        body = _json_body(request)
        if isinstance(body, HttpResponse):
            return body
        try:
            self.runs.chat_send(conversation_id=conversation_id, message=body.get("message"))
        except StudioError as error:
            return _error(error)
        return JsonResponse({"chat": chat_detail(conversation_id=conversation_id, agents=self.runs.agents)}, status=201)

    # -- approvals ---------------------------------------------------------------------------

    def approvals(self, request: HttpRequest) -> HttpResponse:
        if request.method != "GET":
            return _method_not_allowed("GET")
        return JsonResponse(approvals_panel())

    def decision(self, request: HttpRequest, approval_id: int) -> HttpResponse:
        if request.method != "POST":
            return _method_not_allowed("POST")
        body = _json_body(request)
        if isinstance(body, HttpResponse):
            return body
        approved = body.get("approved")
        if not isinstance(approved, bool):
            return JsonResponse({"error": "Say approved: true or false.", "field": "approved"}, status=400)
        reason = body.get("reason", "")
        if not isinstance(reason, str):
            return JsonResponse({"error": "The reason must be text.", "field": "reason"}, status=400)
        try:
            self.runs.decide(approval_id=approval_id, approved=approved, reason=reason)
        except StudioError as error:
            return _error(error)
        return JsonResponse(approvals_panel())

    # -- live updates ------------------------------------------------------------------------

    async def events(self, request: HttpRequest) -> HttpResponse:
        """Server-sent events: one message per batch of changes, naming the chats that changed.
        The page then reads what it shows again; the database stays the only truth."""
        if request.method != "GET":
            return _method_not_allowed("GET")
        changes = self.runs.changes
        after = changes.last

        async def stream():
            nonlocal after
            yield f"retry: {RECONNECT_MS}\n: connected\n\n"
            while True:
                batch = await changes.wait_async(after, HEARTBEAT_SECONDS)
                if batch is None:
                    return  # Studio is stopping: end the response, the page reconnects later
                if not batch:
                    yield ": still here\n\n"
                    continue
                after = batch[-1][0]
                yield f"id: {after}\ndata: {json.dumps(_summary(batch))}\n\n"

        response = StreamingHttpResponse(stream(), content_type="text/event-stream")
        response["Cache-Control"] = "no-store"
        return response


def _summary(batch: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    chats = sorted({c["conversation_id"] for _, c in batch if c.get("conversation_id") is not None})
    return {
        "chats": chats,
        "approvals": any("approval_id" in c or c.get("event", "").startswith("approval") for _, c in batch),
        "everything": any(c.get("everything") for _, c in batch),
    }


def _json_body(request: HttpRequest) -> dict[str, Any] | HttpResponse:
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, RecursionError):  # invalid JSON or text; nested thousands deep
        return JsonResponse({"error": "Send a JSON object."}, status=400)
    if not isinstance(body, dict):
        return JsonResponse({"error": "Send a JSON object."}, status=400)
    return body


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _error(error: StudioError) -> JsonResponse:
    body = {"error": str(error)}
    if error.field:
        body["field"] = error.field
    return JsonResponse(body, status=error.status)


def _method_not_allowed(allowed: str) -> HttpResponse:
    response = JsonResponse({"error": f"Use {allowed}."}, status=405)
    response["Allow"] = allowed
    return response
