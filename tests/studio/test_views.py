"""Studio's page and JSON API through its own ASGI handler: CSRF, hosts, escaping, errors, events."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from http.cookies import SimpleCookie

import pytest
from asgiref.sync import async_to_sync
from channels.testing import ApplicationCommunicator, HttpCommunicator

from agents.models import AgentRun
from anvia import Agent
from anvia.studio.asgi import StudioHandler
from anvia.studio.views import StudioSite
from anvia.testing import ScriptedModel, call
from tests.factories import ApprovalFactory
from tests.studio.conftest import finished, pending_approval, refund_agent

pytestmark = pytest.mark.django_db(transaction=True)

HOST = (b"host", b"127.0.0.1:4021")
SCRIPT = "<script>window.__xss=1</script>"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


def request(app, method: str, path: str, *, body=None, headers=(), host=HOST) -> Reply:
    async def send():
        payload = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else b""
        communicator = HttpCommunicator(app, method, path, body=payload, headers=[host, *headers])
        response = await communicator.get_response(timeout=10)
        await communicator.wait(10)
        return response

    response = async_to_sync(send)()
    headers = {}
    for name, value in response["headers"]:
        key = name.decode().lower()
        headers[key] = f"{headers[key]}, {value.decode()}" if key in headers else value.decode()
    return Reply(response["status"], headers, response["body"])


class Browser:
    """Studio's page as a browser holds it: the CSRF cookie and the token the page carries."""

    def __init__(self, app):
        self.app = app
        page = request(app, "GET", "/")
        assert page.status == 200
        self.page = page
        self.cookie = SimpleCookie(page.headers["set-cookie"])["csrftoken"].value

    def post(self, path: str, body: dict, *, token: str | None = None) -> Reply:
        headers = [(b"cookie", f"csrftoken={self.cookie}".encode()), (b"content-type", b"application/json")]
        headers.append((b"x-csrftoken", (token if token is not None else self.cookie).encode()))
        return request(self.app, "POST", path, body=body, headers=headers)


@pytest.fixture
def app_for(studio):
    def make(*agents: Agent):
        runs = studio(*agents)
        return runs, StudioHandler(StudioSite(runs))

    return make


def test_the_page_lists_agents_and_tools_as_text_and_forbids_framing(app_for, alice):
    tool_agent = refund_agent(ScriptedModel(["Hi."]), [])
    tool_agent.description = f"Refunds {SCRIPT}"
    _, app = app_for(tool_agent)

    page = Browser(app).page
    html = page.body.decode()
    assert "Refunds &lt;script&gt;window.__xss=1&lt;/script&gt;" in html
    assert SCRIPT not in html
    assert "refund_order" in html
    assert "asks if rule holds" in html
    assert re.search(r'<option value="\d+" selected>alice</option>', html)
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert request(app, "GET", "/assets/studio.js").status == 200


def test_a_host_that_is_not_allowed_gets_400(app_for):
    _, app = app_for(refund_agent(ScriptedModel(["Hi."]), []))
    assert request(app, "GET", "/", host=(b"host", b"attacker.example")).status == 400
    assert request(app, "GET", "/api/approvals", host=(b"host", b"attacker.example")).status == 400


def test_writes_need_the_csrf_token_of_studios_page(app_for, alice):
    _, app = app_for(refund_agent(ScriptedModel(["Hi."]), []))
    browser = Browser(app)
    chat = {"agent": "support", "user_id": alice.pk, "message": "hi"}

    refused = request(app, "POST", "/api/chats", body=chat, headers=[(b"content-type", b"application/json")])
    assert refused.status == 403
    assert browser.post("/api/chats", chat, token="x" * 32).status == 403
    assert not AgentRun.objects.exists()


def test_chat_approve_and_a_second_decision_through_the_api(app_for, alice):
    executed = []
    model = ScriptedModel([call("refund_order", order_id="A-1001", amount=150), "Refunded."])
    runs, app = app_for(refund_agent(model, executed))
    browser = Browser(app)

    created = browser.post("/api/chats", {"agent": "support", "user_id": alice.pk, "message": "refund A-1001 $150"})
    assert created.status == 201
    chat = created.json()["chat"]
    assert (chat["agent"], chat["user"], chat["title"]) == ("support", "alice", "refund A-1001 $150")

    approval = pending_approval(runs)
    panel = request(app, "GET", "/api/approvals").json()
    assert [a["reason"] for a in panel["pending"]] == ["Review refund of $150 for A-1001."]

    busy = browser.post(f"/api/chats/{chat['id']}/messages", {"message": "and another"})
    assert busy.status == 409
    assert busy.json()["error"].startswith(f"This chat is waiting for approval #{approval.pk}")

    decided = browser.post(f"/api/approvals/{approval.pk}/decision", {"approved": True, "reason": "ok"})
    assert decided.status == 200
    assert decided.json()["pending"] == []
    assert decided.json()["recent"][0]["decided_by"] == "studio"
    again = browser.post(f"/api/approvals/{approval.pk}/decision", {"approved": False})
    assert again.status == 409
    assert again.json()["error"].startswith(f"Approval #{approval.pk} was already approved by studio")

    finished(runs, AgentRun.objects.get())
    detail = request(app, "GET", f"/api/chats/{chat['id']}").json()["chat"]
    assert detail["status"] == "succeeded"
    assert detail["runs"][0]["answer"] == "Refunded."
    assert len(executed) == 1


def test_bad_requests_name_what_is_wrong(app_for, alice):
    _, app = app_for(refund_agent(ScriptedModel(["Hi."]), []))
    browser = Browser(app)
    foreign = ApprovalFactory(run_id="8a4d1d66-1009-44f6-8529-e3abe6fc3ba0")

    empty = browser.post("/api/chats", {"agent": "support", "user_id": alice.pk, "message": ""})
    assert (empty.status, empty.json()) == (400, {"error": "Type a message first.", "field": "message"})
    no_user = browser.post("/api/chats", {"agent": "support", "user_id": "alice", "message": "hi"})
    assert (no_user.status, no_user.json()["field"]) == (400, "user_id")
    not_a_flag = browser.post(f"/api/approvals/{foreign.pk}/decision", {"approved": "yes"})
    assert (not_a_flag.status, not_a_flag.json()["field"]) == (400, "approved")
    # The app's own approvals are not Studio's to decide.
    not_studios = browser.post(f"/api/approvals/{foreign.pk}/decision", {"approved": True})
    assert (not_studios.status, not_studios.json()["error"]) == (404, f"There is no Studio approval #{foreign.pk}.")
    assert request(app, "GET", "/api/approvals").json()["pending"] == []
    assert request(app, "GET", "/api/chats/999").status == 404
    assert request(app, "POST", "/api/approvals").status == 405
    deep = browser.post("/api/chats", b'{"message": ' + b"[" * 5000 + b"]" * 5000 + b"}")
    assert (deep.status, deep.json()) == (400, {"error": "Send a JSON object."})


def test_the_event_stream_names_the_chat_that_changed(app_for, alice):
    runs, app = app_for(refund_agent(ScriptedModel(["Hi."]), []))

    async def listen():
        scope = {
            "type": "http",
            "http_version": "1.1",
            "method": "GET",
            "path": "/api/events",
            "query_string": b"",
            "headers": [HOST],
        }
        stream = ApplicationCommunicator(app, scope)
        await stream.send_input({"type": "http.request", "body": b""})
        start = await stream.receive_output(5)
        assert start["status"] == 200
        assert (b"Content-Type", b"text/event-stream") in start["headers"]
        hello = await stream.receive_output(5)
        assert hello["body"].startswith(b"retry: ")
        runs.changes.post(conversation_id=41, run_id="r", event="tool_call")
        message = await stream.receive_output(5)
        await stream.send_input({"type": "http.disconnect"})
        await stream.wait(5)
        return message["body"].decode()

    message = async_to_sync(listen)()
    assert message.startswith("id: ")
    data = json.loads(message.split("data: ", 1)[1])
    assert data == {"chats": [41], "approvals": False, "everything": False}
