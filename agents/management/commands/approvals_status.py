"""``manage.py approvals_status``: what is waiting on a person, and which runs are stuck.

Four sections: pending approvals; runs blocked in a worker on a decision (``waiting_for_approval``
with a live lease); suspended runs (waiting for a decision, holding no worker); orphaned runs (a
worker held them and its lease ran out: it died; the next decision or recovery resumes them).
``--json`` prints the same as one JSON object.

It lives in ``agents`` because it reads both apps (``approvals`` never imports ``agents``); which
run is blocked, suspended or orphaned is ``AgentRun.objects``' to say.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand
from django.utils import timezone

from agents.models import AgentRun
from approvals.selectors import approvals_pending


def duration(seconds: float) -> str:
    """``45s``, ``2m 05s``, ``3h 04m``, ``2d 03h``."""
    seconds = int(max(seconds, 0))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _seconds(since: datetime | None, now: datetime) -> int | None:
    return None if since is None else int((now - since).total_seconds())


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _username(user) -> str | None:
    return user.get_username() if user is not None else None


def status_report(*, limit: int = 50, now: datetime | None = None) -> dict[str, Any]:
    """Everything the command prints, as plain data (``--json`` prints exactly this)."""
    now = now or timezone.now()
    pending = approvals_pending()
    report: dict[str, Any] = {
        "generated_at": now.isoformat(),
        "counts": {"pending_approvals": pending.count()},
        "pending_approvals": [
            {
                "id": approval.pk,
                "tool": approval.tool_name,
                "requester": _username(approval.requested_by),
                "run_id": approval.run_id,
                "created_at": _iso(approval.created_at),
                "age_seconds": _seconds(approval.created_at, now),
                "expires_at": _iso(approval.expires_at),
                "expires_in_seconds": int((approval.expires_at - now).total_seconds()),
            }
            for approval in pending.order_by("created_at", "id")[:limit]
        ],
    }
    runs = AgentRun.objects.select_related("user")
    sections = {
        "blocked_runs": runs.blocked_on_decision(now).order_by("created_at"),
        "suspended_runs": runs.filter(status=AgentRun.Status.SUSPENDED).order_by("suspended_at", "created_at"),
        "orphaned_runs": runs.orphaned(now).order_by("lease_expires_at"),
    }
    shown = {name: list(query[:limit]) for name, query in sections.items()}
    run_ids = [str(run.pk) for rows in shown.values() for run in rows]
    waiting_on: dict[str, list[int]] = {}
    for approval_id, run_id in pending.filter(run_id__in=run_ids).order_by("pk").values_list("pk", "run_id"):
        waiting_on.setdefault(run_id, []).append(approval_id)

    for name, query in sections.items():
        report["counts"][name] = query.count()
        report[name] = [
            {
                "run_id": str(run.pk),
                "status": run.status,
                "user": _username(run.user),
                "attempts": run.attempts,
                "created_at": _iso(run.created_at),
                "age_seconds": _seconds(run.created_at, now),
                "suspended_at": _iso(run.suspended_at),
                "suspended_seconds": (
                    _seconds(run.suspended_at, now) if run.status == AgentRun.Status.SUSPENDED else None
                ),
                "lease_owner": run.lease_owner or None,
                "lease_expires_at": _iso(run.lease_expires_at),
                "lease_left_seconds": (
                    int((run.lease_expires_at - now).total_seconds()) if run.lease_expires_at else None
                ),
                "waiting_on_approvals": waiting_on.get(str(run.pk), []),
            }
            for run in shown[name]
        ]
    return report


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    return [
        "  " + "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]


class Command(BaseCommand):
    help = "List pending approvals and the agent runs waiting on them: blocked, suspended and orphaned."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print one JSON object instead of tables.")
        parser.add_argument("--limit", type=int, default=50, help="At most this many rows per section (default 50).")

    def handle(self, *args, **options):
        report = status_report(limit=max(options["limit"], 0))
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2))
            return
        self.stdout.write("\n".join(self.render(report)))

    def render(self, report: dict[str, Any]) -> list[str]:
        counts = report["counts"]
        lines = [f"Pending approvals: {counts['pending_approvals']}"]
        lines += self.rows(
            ["ID", "TOOL", "REQUESTER", "AGE", "EXPIRES IN", "RUN"],
            [
                [
                    str(a["id"]),
                    a["tool"],
                    a["requester"] or "-",
                    duration(a["age_seconds"]),
                    duration(a["expires_in_seconds"]) if a["expires_in_seconds"] > 0 else "overdue",
                    a["run_id"],
                ]
                for a in report["pending_approvals"]
            ],
            counts["pending_approvals"],
        )
        sections = [
            ("blocked_runs", "Runs blocked in a worker on a decision", "LEASE LEFT", "lease_left_seconds"),
            ("suspended_runs", "Suspended runs (waiting for a decision, no worker held)", "SUSPENDED", None),
            ("orphaned_runs", "Orphaned runs (lease expired: their worker died)", "EXPIRED AGO", "lease_left_seconds"),
        ]
        for name, title, last, field in sections:
            lines += ["", f"{title}: {counts[name]}"]
            rows = []
            for run in report[name]:
                tail = duration((run["suspended_seconds"] or 0) if field is None else abs(run[field] or 0))
                waiting = ", ".join(f"#{pk}" for pk in run["waiting_on_approvals"]) or "-"
                owner = run["lease_owner"] or "-"
                rows.append(
                    [
                        run["run_id"],
                        run["user"] or "-",
                        run["status"],
                        duration(run["age_seconds"]),
                        waiting,
                        owner,
                        tail,
                    ]
                )
            lines += self.rows(["RUN", "USER", "STATUS", "AGE", "APPROVALS", "LEASE OWNER", last], rows, counts[name])
        return lines

    @staticmethod
    def rows(headers: list[str], rows: list[list[str]], total: int) -> list[str]:
        if not rows:
            return ["  (none)"]
        lines = table(headers, rows)
        if total > len(rows):
            lines.append(f"  ... and {total - len(rows)} more (--limit)")
        return lines
