"""``scripts/studio.py`` in its own process: one process, no Redis, Ctrl-C, and a restart that resumes."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest

from tests.studio.server_process import ROOT, ChangeStream, StudioClient, StudioProcess, seeded_database, studio_env


@pytest.fixture
def database(tmp_path_factory, tmp_path):
    return seeded_database(tmp_path_factory, tmp_path)


def test_importing_anvia_studio_sets_django_up_in_one_process_mode(tmp_path):
    script = (
        "import os, anvia.studio\n"
        "from django.conf import settings\n"
        "from agents.support import support_agent\n"
        "print(settings.ANVIA_DECISION_CHANNEL, settings.CHANNEL_LAYERS['default']['BACKEND'], support_agent.name)\n"
    )
    env = studio_env(tmp_path / "unused.sqlite3")
    env.pop("DJANGO_SETTINGS_MODULE")
    env["ANVIA_DECISION_CHANNEL"] = "redis"  # Studio needs no Redis, whatever the environment says
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["memory", "channels.layers.InMemoryChannelLayer", "support"]


def test_ctrl_c_suspends_a_waiting_run_and_the_next_start_resumes_it(database):
    studio = StudioProcess(database)
    try:
        assert "agent      support (offline demo model; tools: lookup_order, refund_order, cancel_order)" in (
            studio.output
        )
        assert '  reviewer   decisions made in Studio are recorded as user "studio"' in studio.output
        assert "  acting as  alice by default" in studio.output
        client = StudioClient(studio.url)
        alice = studio.query("select id from auth_user where username = 'alice'")[0][0]
        changes = ChangeStream(studio.url)
        chat = client.post("/api/chats", {"agent": "support", "user_id": alice, "message": "refund order A-1001, $150"})
        pending = changes.until(lambda: client.get("/api/approvals")["pending"], what="the approval")
        assert pending[0]["reason"] == "Review refund of $150.00 for A-1001."
        changes.close()

        assert studio.stop(signal.SIGINT) == 0
    finally:
        studio.kill()
    assert "those waiting for a decision are suspended" in studio.output
    assert studio.output.rstrip().endswith("Anvia Studio stopped.")
    assert studio.query("select status, lease_owner like 'studio:%' from agents_agentrun") == [("suspended", 1)]
    assert studio.query("select status from approvals_approval") == [("pending",)]

    again = StudioProcess(database)
    try:
        assert "  resumed    1 run(s) an earlier Studio left waiting" in again.output
        client = StudioClient(again.url)
        changes = ChangeStream(again.url)
        client.post(f"/api/approvals/{pending[0]['id']}/decision", {"approved": True, "reason": "fine"})
        detail = changes.until(
            lambda: (c := client.get(f"/api/chats/{chat['chat']['id']}")["chat"])["status"] == "succeeded" and c,
            what="the resumed run to finish",
        )
        changes.close()
        assert detail["runs"][0]["answer"].startswith("Done: I refunded $150.00 for order A-1001")
        assert again.stop(signal.SIGTERM) == 0
    finally:
        again.kill()
    assert studio.query("select count(*) from shop_refund") == [(1,)]
    assert studio.query(
        "select a.status, u.username from approvals_approval a join auth_user u on u.id = a.decided_by_id"
    ) == [("approved", "studio")]
    assert "Traceback" not in again.output


def test_studio_migrates_an_empty_database_and_a_port_in_use_is_a_clear_error(tmp_path):
    first = StudioProcess(tmp_path / "empty.sqlite3")
    assert re.search(r"  migrated   \d+ migration\(s\) applied", first.output)
    assert "  acting as  customer by default" in first.output
    try:
        port = first.url.rsplit(":", 1)[1].strip("/")
        env = {**studio_env(first.database), "ANVIA_STUDIO_PORT": port}
        second = subprocess.run(
            [sys.executable, "scripts/studio.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
    finally:
        first.stop()
        first.kill()
    assert second.returncode == 1
    assert f"Anvia Studio did not start. Couldn't listen on 127.0.0.1:{port}" in second.stderr
    assert "Pick another port" in second.stderr
