"""``manage.py approvals_status``: pending approvals, and the runs blocked, suspended or orphaned."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from agents.management.commands.approvals_status import duration
from agents.models import AgentRun
from tests.factories import AgentRunFactory, ApprovalFactory, ReviewerFactory

pytestmark = pytest.mark.django_db


def status(*args: str) -> str:
    out = StringIO()
    call_command("approvals_status", *args, stdout=out)
    return out.getvalue()


def make_run(user, status: str, *, age: timedelta, **fields) -> AgentRun:
    run = AgentRunFactory(user=user, status=status, **fields)
    AgentRun.objects.filter(pk=run.pk).update(created_at=timezone.now() - age)
    return run


@pytest.fixture
def stuck(alice):
    """One run of each kind, with the approvals they wait on, and some that must not be listed."""
    now = timezone.now()
    blocked = make_run(
        alice,
        "waiting_for_approval",
        age=timedelta(seconds=40),
        lease_owner="celery@web-1/0123456789ab",
        lease_expires_at=now + timedelta(seconds=90),
    )
    suspended = make_run(alice, "suspended", age=timedelta(hours=2), suspended_at=now - timedelta(minutes=95))
    orphaned = make_run(
        alice,
        "waiting_for_approval",
        age=timedelta(minutes=10),
        lease_owner="celery@web-2/ba9876543210",
        lease_expires_at=now - timedelta(minutes=3),
    )
    # Not listed: finished, and running under a live lease.
    make_run(alice, "succeeded", age=timedelta(minutes=1))
    make_run(alice, "running", age=timedelta(seconds=5), lease_owner="x", lease_expires_at=now + timedelta(minutes=2))

    approvals = {
        "blocked": ApprovalFactory(run_id=str(blocked.pk), requested_by=alice),
        "suspended": ApprovalFactory(
            run_id=str(suspended.pk), requested_by=alice, tool_name="cancel_order", args={"order_id": "A-1003"}
        ),
        "orphaned": ApprovalFactory(run_id=str(orphaned.pk), requested_by=alice, expires_at=now - timedelta(minutes=1)),
    }
    ApprovalFactory(status="approved", decided_by=ReviewerFactory())  # decided: not listed
    return {"blocked": blocked, "suspended": suspended, "orphaned": orphaned, "approvals": approvals}


def test_the_table_lists_each_section_with_ids_and_ages(stuck):
    text = status()
    pending, blocked, suspended, orphaned = text.split("\n\n")

    assert pending.startswith("Pending approvals: 3\n")
    assert pending.splitlines()[1].split() == ["ID", "TOOL", "REQUESTER", "AGE", "EXPIRES", "IN", "RUN"]
    first = next(
        line for line in pending.splitlines() if line.strip().startswith(str(stuck["approvals"]["blocked"].pk))
    )
    assert first.split()[1:] == ["refund_order", "alice", "0s", "23h", "59m", str(stuck["blocked"].pk)]
    assert "cancel_order" in pending
    assert "overdue" in pending  # pending but past its expiry: the next sweep expires it

    assert blocked.startswith("Runs blocked in a worker on a decision: 1\n")
    assert str(stuck["blocked"].pk) in blocked
    assert "celery@web-1/0123456789ab" in blocked
    assert f"#{stuck['approvals']['blocked'].pk}" in blocked
    assert "40s" in blocked or "41s" in blocked

    assert suspended.startswith("Suspended runs (waiting for a decision, no worker held): 1\n")
    assert str(stuck["suspended"].pk) in suspended
    assert "1h 35m" in suspended  # suspended for
    assert "2h 00m" in suspended  # age

    assert orphaned.startswith("Orphaned runs (lease expired: their worker died): 1\n")
    assert str(stuck["orphaned"].pk) in orphaned
    assert "celery@web-2/ba9876543210" in orphaned
    assert "3m 0" in orphaned  # expired ago
    assert str(stuck["orphaned"].pk) not in blocked


def test_json_has_the_same_facts(stuck):
    report = json.loads(status("--json"))
    assert report["counts"] == {"pending_approvals": 3, "blocked_runs": 1, "suspended_runs": 1, "orphaned_runs": 1}
    approval = stuck["approvals"]["blocked"]
    listed = next(a for a in report["pending_approvals"] if a["id"] == approval.pk)
    assert listed["tool"] == "refund_order"
    assert listed["requester"] == "alice"
    assert listed["run_id"] == str(stuck["blocked"].pk)
    assert 86000 < listed["expires_in_seconds"] <= 86400
    assert listed["age_seconds"] >= 0

    [blocked] = report["blocked_runs"]
    assert blocked["run_id"] == str(stuck["blocked"].pk)
    assert blocked["waiting_on_approvals"] == [approval.pk]
    assert blocked["lease_owner"] == "celery@web-1/0123456789ab"
    assert 80 < blocked["lease_left_seconds"] <= 90
    [suspended] = report["suspended_runs"]
    assert 95 * 60 <= suspended["suspended_seconds"] < 96 * 60
    [orphaned] = report["orphaned_runs"]
    assert orphaned["lease_left_seconds"] < -170


def test_limit_shows_how_many_rows_are_left_out(stuck):
    text = status("--limit", "1")
    assert "... and 2 more (--limit)" in text
    assert len(json.loads(status("--json", "--limit", "1"))["pending_approvals"]) == 1


def test_nothing_waiting():
    text = status()
    assert text.count("(none)") == 4
    assert text.startswith("Pending approvals: 0\n")


def test_duration():
    assert [duration(s) for s in (0, 45, 125, 3 * 3600 + 4 * 60, 2 * 86400 + 3 * 3600)] == [
        "0s",
        "45s",
        "2m 05s",
        "3h 04m",
        "2d 03h",
    ]
