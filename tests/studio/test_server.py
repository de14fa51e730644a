"""A served Studio over real HTTP: what it prints, where it binds, its page, API errors and events."""

from __future__ import annotations

import http.client
import io
import json
import re
import socket
import threading

import pytest

from anvia import Agent
from anvia.studio import Studio
from anvia.studio.server import _banner, _port
from anvia.testing import ScriptedModel, call
from tests.studio.conftest import (
    ALICE,
    TEST_SLICE_SECONDS,
    finished,
    pending_approval,
    previewed_refund_agent,
    refund_agent,
    until,
)

SCRIPT = "<script>window.__xss=1</script>"


class Client:
    """Studio's HTTP API as its page uses it: the page's token on every write."""

    def __init__(self, studio):
        self.port = studio.port
        page = self.request("GET", "/")
        assert page[0] == 200
        self.page = page[2].decode()
        self.token = re.search(r'<meta name="studio-token" content="([^"]+)">', self.page).group(1)

    def request(self, method, path, body=None, *, headers=None, host=None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        payload = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        sent = {"Host": host or f"127.0.0.1:{self.port}", **(headers or {})}
        connection.request(method, path, body=payload, headers=sent)
        response = connection.getresponse()
        reply = (response.status, dict(response.getheaders()), response.read())
        connection.close()
        return reply

    def get(self, path):
        status, _, body = self.request("GET", path)
        return status, json.loads(body)

    def post(self, path, body, *, token=None, headers=None):
        sent = {"Content-Type": "application/json", "X-Studio-Token": token or self.token, **(headers or {})}
        status, _, reply = self.request("POST", path, body, headers=sent)
        return status, json.loads(reply)


class Output(io.StringIO):
    """Studio's terminal; ``ready`` is set once Studio says how to stop it."""

    def __init__(self):
        super().__init__()
        self.ready = threading.Event()

    def write(self, text: str) -> int:
        written = super().write(text)
        if "Ctrl-C stops Studio." in text:
            self.ready.set()
        return written


def test_start_prints_the_address_first_and_stops_cleanly(monkeypatch):
    out = Output()
    monkeypatch.setenv("ANVIA_STUDIO_PORT", "0")
    studio = Studio([Agent(name="plain", instructions="Hi.", model=ScriptedModel(["Hi."]))], out=out)
    serving = threading.Thread(target=studio.start)
    serving.start()
    assert out.ready.wait(10), out.getvalue()
    studio.stop()  # what Ctrl-C does in the main thread
    serving.join(10)
    assert not serving.is_alive()
    lines = out.getvalue().splitlines()
    assert re.fullmatch(
        r"Anvia Studio on http://127\.0\.0\.1:\d+/ \(bound to 127\.0\.0\.1 only: other machines cannot reach it\)",
        lines[0],
    )
    assert lines[1:] == [
        "  agent      plain (scripted model; tools: none)",
        "  approvals  in memory (gone when Studio stops)",
        '  reviewer   decisions made in Studio are recorded as "studio"',
        "  Ctrl-C stops Studio.",
        "Stopping.",
        "Anvia Studio stopped.",
    ]


def test_banner_port_and_what_studio_refuses_to_serve():
    agent = Agent(name="support", instructions="Hi.", model=ScriptedModel(["Hi."]))
    assert Studio([agent]).host == "127.0.0.1"
    exposed = _banner("0.0.0.0", 4021)  # noqa: S104
    assert exposed.startswith("Anvia Studio on http://0.0.0.0:4021/\nWARNING: Studio is bound to every network")
    assert "anyone who can reach it can chat as your users and approve tool calls" in exposed
    assert _banner("::1", 4021).startswith("Anvia Studio on http://[::1]:4021/ (bound to ::1 only")
    with pytest.raises(ValueError, match="at least one agent"):
        Studio([])
    with pytest.raises(ValueError, match="Two agents are named 'support'"):
        Studio([agent, agent])
    with pytest.raises(TypeError, match="Studio takes anvia Agent objects"):
        Studio(["support"])
    with pytest.raises(SystemExit, match="from 0 to 65535"):
        _port("80a")
    with pytest.raises(SystemExit, match="from 0 to 65535"):
        _port(70000)


def test_a_port_in_use_is_a_clear_error(monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("ANVIA_STUDIO_PORT", str(port))
        studio = Studio([Agent(name="plain", instructions="Hi.", model=ScriptedModel(["Hi."]))], out=io.StringIO())
        with pytest.raises(SystemExit, match=rf"Anvia Studio did not start. Couldn't listen on 127.0.0.1:{port}: "):
            studio.start()


def test_the_page_loads_its_own_assets_and_forbids_framing(served):
    agent = refund_agent(ScriptedModel(["Hi."]), [])
    agent.description = f"Refunds {SCRIPT}"
    client = Client(served(agent))

    status, headers, _ = client.request("GET", "/")
    assert status == 200
    assert headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert SCRIPT not in client.page  # agents are read by the page's script, as data
    assert client.request("GET", "/assets/studio.js")[0] == 200
    assert client.request("GET", "/assets/nothing.js")[0] == 404
    status, studio = client.get("/api/studio")
    assert status == 200
    assert studio["agents"][0]["description"] == f"Refunds {SCRIPT}"
    assert studio["agents"][0]["tools"][0] == {
        "name": "refund_order",
        "description": "Issue a refund.",
        "approval": "rule",
        "reject_message": "Refund was not approved.",
    }
    assert studio["users"] == [{"id": 7, "label": "alice", "note": ""}, {"id": 8, "label": "bob", "note": "staff"}]
    assert (studio["reviewer"], studio["notice"]) == ("studio", "")


def test_a_host_name_that_is_not_studios_gets_400(served):
    client = Client(served(refund_agent(ScriptedModel(["Hi."]), [])))
    status, _, body = client.request("GET", "/api/approvals", host="attacker.example:4021")
    assert status == 400
    assert "does not answer to the host 'attacker.example:4021'" in json.loads(body)["error"]
    assert client.request("GET", "/api/events", host="attacker.example")[0] == 400
    assert client.request("GET", "/api/approvals", host=f"localhost:{client.port}")[0] == 200


def test_writes_need_the_token_of_studios_page(served):
    client = Client(served(refund_agent(ScriptedModel(["Hi."]), [])))
    chat = {"agent": "support", "user_id": ALICE.id, "message": "hi"}

    assert client.post("/api/chats", chat, token="x" * 32)[0] == 403
    status, _, body = client.request("POST", "/api/chats", chat, headers={"Content-Type": "application/json"})
    assert (status, json.loads(body)["error"]) == (
        403,
        "This request lacks the token of Studio's page: reload the page and try again.",
    )
    foreign = client.post("/api/chats", chat, headers={"Origin": "http://attacker.example"})
    assert foreign == (403, {"error": "Studio accepts changes only from its own page."})
    assert client.get("/api/chats") == (200, {"chats": []})


def test_chat_approve_and_a_second_decision_through_the_api(served):
    executed = []
    model = ScriptedModel([call("refund_order", order_id="A-1001", amount=150), "Refunded."])
    studio = served(refund_agent(model, executed))
    client = Client(studio)

    status, created = client.post("/api/chats", {"agent": "support", "user_id": 7, "message": "refund A-1001 $150"})
    assert status == 201
    chat = created["chat"]
    assert (chat["agent"], chat["user"], chat["title"]) == ("support", "alice", "refund A-1001 $150")

    approval = pending_approval(studio.runs)
    panel = client.get("/api/approvals")[1]
    assert [a["reason"] for a in panel["pending"]] == ["Review refund of $150 for A-1001."]

    busy = client.post(f"/api/chats/{chat['id']}/messages", {"message": "and another"})
    assert busy[0] == 409
    assert busy[1]["error"].startswith(f"This chat is waiting for approval #{approval.id}")

    status, decided = client.post(f"/api/approvals/{approval.id}/decision", {"approved": True, "reason": "ok"})
    assert status == 200
    assert decided["pending"] == []
    assert decided["recent"][0]["decided_by"] == "studio"
    again = client.post(f"/api/approvals/{approval.id}/decision", {"approved": False})
    assert again == (409, {"error": f"Approval #{approval.id} was already approved by studio."})

    finished(studio.runs, chat["id"])
    detail = client.get(f"/api/chats/{chat['id']}")[1]["chat"]
    assert (detail["status"], detail["runs"][0]["answer"]) == ("succeeded", "Refunded.")
    assert len(executed) == 1


def test_bad_requests_name_what_is_wrong(served):
    client = Client(served(refund_agent(ScriptedModel(["Hi."]), [])))

    empty = client.post("/api/chats", {"agent": "support", "user_id": 7, "message": ""})
    assert empty == (400, {"error": "Type a message first.", "field": "message"})
    no_user = client.post("/api/chats", {"agent": "support", "user_id": "alice", "message": "hi"})
    assert (no_user[0], no_user[1]["field"]) == (400, "user_id")
    not_a_flag = client.post("/api/approvals/1/decision", {"approved": "yes"})
    assert not_a_flag == (400, {"error": "Say approved: true or false.", "field": "approved"})
    no_reason = client.post("/api/approvals/1/decision", {"approved": True, "reason": 5})
    assert no_reason == (400, {"error": "The reason must be text.", "field": "reason"})
    long_reason = client.post("/api/approvals/1/decision", {"approved": True, "reason": "x" * 2001})
    assert long_reason == (400, {"error": "The reason is longer than 2000 characters.", "field": "reason"})
    assert client.post("/api/approvals/1/decision", {"approved": True}) == (
        404,
        {"error": "There is no Studio approval #1."},
    )
    assert client.get("/api/chats/999") == (404, {"error": "There is no Studio chat #999."})
    assert client.get("/api/nothing") == (404, {"error": "Studio has nothing at /api/nothing."})
    status, headers, _ = client.request("POST", "/api/approvals", b"{}")
    assert (status, headers["Allow"]) == (405, "GET")
    assert client.post("/api/chats", b"[1]") == (400, {"error": "Send a JSON object."})
    deep = client.post("/api/chats", b'{"message": ' + b"[" * 5000 + b"]" * 5000 + b"}")
    assert deep == (400, {"error": "Send a JSON object."})
    assert client.post("/api/chats", b"x" * 70_000)[0] == 413


def test_respond_and_terminate_through_the_api_with_the_preview_in_the_panel(served):
    executed = []
    model = ScriptedModel(
        [
            call("refund_order", order_id="A-1", amount=150),
            "Handled.",
            [call("refund_order", order_id="A-2", amount=120), call("refund_order", order_id="A-3", amount=130)],
        ]
    )
    studio = served(previewed_refund_agent(model, executed))
    client = Client(studio)
    chat = client.post("/api/chats", {"agent": "support", "user_id": 7, "message": "refund A-1 $150"})[1]["chat"]
    approval = pending_approval(studio.runs)
    pending = client.get("/api/approvals")[1]["pending"]
    assert pending[0]["preview"]["warnings"] == ["Only $80.00 is left to refund on A-1."]
    assert pending[0]["preview"]["facts"][1] == {"name": "left_to_refund", "value": "$80.00"}

    missing = client.post(f"/api/approvals/{approval.id}/decision", {"action": "respond", "reason": "x"})
    assert missing == (
        400,
        {"error": "Write what the model should receive instead of the tool's result.", "field": "response"},
    )
    status, panel = client.post(
        f"/api/approvals/{approval.id}/decision", {"action": "respond", "response": "Refunded by phone (RF-77)."}
    )
    assert status == 200
    assert (panel["recent"][0]["action"], panel["recent"][0]["response"]) == ("respond", "Refunded by phone (RF-77).")
    assert finished(studio.runs, chat["id"])["runs"][0]["answer"] == "Handled."
    assert model.requests[1].messages[-1].content == "Refunded by phone (RF-77)."

    client.post(f"/api/chats/{chat['id']}/messages", {"message": "two more"})
    both = until(studio.runs, lambda: len(studio.runs.store.pending()) == 2 and studio.runs.store.pending(), what="two")
    status, panel = client.post(f"/api/approvals/{both[1].id}/decision", {"action": "terminate", "reason": "Stop."})
    assert status == 200
    assert panel["pending"] == []
    assert sorted((a["id"], a["status"], a["action"]) for a in panel["recent"][:2]) == [
        (both[0].id, "cancelled", ""),
        (both[1].id, "rejected", "terminate"),
    ]
    run = finished(studio.runs, chat["id"])["runs"][1]
    assert (run["status"], run["error"]) == ("stopped", "Stop.")
    assert executed == []


@pytest.mark.parametrize(
    ("body", "reply"),
    [
        ({}, {"error": "Say what to do: action approve, reject, respond or terminate.", "field": "action"}),
        ({"action": 1}, {"error": "Say the action as text: approve, reject, respond or terminate.", "field": "action"}),
        (
            {"action": "maybe"},
            {"error": "'maybe' is not an action: approve, reject, respond or terminate.", "field": "action"},
        ),
        ({"action": "respond", "response": 5}, {"error": "The response must be text.", "field": "response"}),
        (
            {"action": "reject", "approved": True},
            {"error": "approved=True does not go with action 'reject'.", "field": "action"},
        ),
    ],
)
def test_a_decision_body_that_says_nothing_or_contradicts_itself_names_the_field(served, body, reply):
    client = Client(served(refund_agent(ScriptedModel(["Hi."]), [])))
    assert client.post("/api/approvals/1/decision", body) == (400, reply)


def test_the_event_stream_names_the_chat_that_changed(served):
    studio = served(refund_agent(ScriptedModel(["Hi."]), []))
    connection = http.client.HTTPConnection("127.0.0.1", studio.port, timeout=10)
    connection.request("GET", "/api/events")
    stream = connection.getresponse()
    assert (stream.status, stream.getheader("Content-Type")) == (200, "text/event-stream")
    assert stream.readline().startswith(b"retry: ")

    studio.runs.changes.post(chat_id=41, approvals=False)
    lines = [stream.readline() for _ in range(4)]
    data = next(line for line in lines if line.startswith(b"data: "))
    assert json.loads(data.removeprefix(b"data: ")) == {"chats": [41], "approvals": False, "everything": False}

    # Stopping Studio ends the stream instead of leaving the page hanging.
    assert studio.stop(5)
    assert stream.read().strip() == b""  # the response ended
    connection.close()


def test_a_wildcard_host_shows_its_warning_in_the_page(served):
    studio = served(refund_agent(ScriptedModel(["Hi."]), []), host="0.0.0.0")  # noqa: S104
    client = Client(studio)
    notice = client.get("/api/studio")[1]["notice"]
    assert notice.startswith("WARNING: Studio is bound to every network interface, not 127.0.0.1.")
    assert TEST_SLICE_SECONDS < 1
