"""``scripts/studio.py`` in its own process: Django set up by the script, no Redis, Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys

from tests.studio.server_process import ROOT, ChangeStream, StudioClient, StudioProcess, seeded_database, studio_env


def test_approve_in_studio_shows_in_the_apps_records_and_ctrl_c_cancels_what_waits(tmp_path_factory, tmp_path):
    studio = StudioProcess(seeded_database(tmp_path_factory, tmp_path))
    try:
        assert "  agent      support (offline demo model; tools: lookup_order, refund_order, cancel_order)" in (
            studio.output
        )
        assert "  approvals  as the approvals app's records (sqlite3 " in studio.output
        assert '  reviewer   decisions made in Studio are recorded as "studio"' in studio.output
        assert "  acting as  alice by default" in studio.output
        client = StudioClient(studio.url)
        alice = next(u for u in client.get("/api/studio")["users"] if u["label"] == "alice")
        changes = ChangeStream(studio.url)

        chat = client.post(
            "/api/chats", {"agent": "support", "user_id": alice["id"], "message": "refund order A-1001, $150"}
        )
        pending = changes.until(lambda: client.get("/api/approvals")["pending"], what="the approval")
        assert pending[0]["reason"] == "Review refund of $150.00 for A-1001."
        client.post(f"/api/approvals/{pending[0]['id']}/decision", {"approved": True, "reason": "fine"})
        detail = changes.until(
            lambda: (c := client.get(f"/api/chats/{chat['chat']['id']}")["chat"])["status"] == "succeeded" and c,
            what="the run to finish",
        )
        assert detail["runs"][0]["answer"].startswith("Done: I refunded $150.00 for order A-1001")

        client.post("/api/chats", {"agent": "support", "user_id": alice["id"], "message": "cancel order A-1003"})
        changes.until(lambda: client.get("/api/approvals")["pending"], what="the second approval")
        changes.close()
        assert studio.stop(signal.SIGINT) == 0
    except AssertionError as error:
        raise AssertionError(f"{error}\n--- what Studio printed:\n{studio.output}") from None
    finally:
        studio.kill()
    assert "Stopping: 1 run(s) still open; requests still waiting for a decision are cancelled." in studio.output
    assert studio.output.rstrip().endswith("Anvia Studio stopped.")
    assert "Traceback" not in studio.output
    assert studio.query(
        "select a.tool_name, a.status, u.username, r.username, a.decision_reason from approvals_approval a"
        " left join auth_user u on u.id = a.decided_by_id join auth_user r on r.id = a.requested_by_id order by a.id"
    ) == [
        ("refund_order", "approved", "studio", "alice", "fine"),
        ("cancel_order", "cancelled", None, "alice", "Studio stopped before anyone decided."),
    ]
    assert studio.query("select count(*) from shop_refund") == [(1,)]
    assert studio.query("select count(*) from agents_agentrun") == [(0,)]


def test_the_script_migrates_an_empty_database_and_a_port_in_use_is_a_clear_error(tmp_path):
    first = StudioProcess(tmp_path / "empty.sqlite3")
    assert "acting as" not in first.output  # nobody to act as yet
    try:
        assert first.query("select count(*) from approvals_approval") == [(0,)]
        port = first.url.rsplit(":", 1)[1].strip("/")
        env = {**studio_env(first.database), "ANVIA_STUDIO_PORT": port}
        second = subprocess.run(
            [sys.executable, "scripts/studio.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        assert first.stop(signal.SIGTERM) == 0
    finally:
        first.kill()
    assert second.returncode == 1
    assert f"Anvia Studio did not start. Couldn't listen on 127.0.0.1:{port}: " in second.stderr
    assert "Pick another port" in second.stderr
