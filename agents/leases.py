"""Run leases: the heartbeat that keeps a worker's hold on its runs, and the fence on its writes.

A worker claims a run by bumping ``AgentRun.attempts``; that number is the lease's fencing token.
While the run is in the worker's hands (a model call, a tool, a wait for a decision) one
heartbeat thread per process renews the lease every ``ANVIA_RUN_HEARTBEAT_SECONDS``, so a live
but busy worker never loses its run. A worker that dies or stalls stops renewing; after
``ANVIA_RUN_LEASE_SECONDS`` the run is orphaned and another worker may claim it (bumping
``attempts``). From then on every write of the old worker matches no row
(``AgentRun.objects.held``): it raises ``LeaseLost`` and the worker stops before running anything.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from agents.models import AgentRun

logger = logging.getLogger("anvia.runs")


class LeaseLost(Exception):
    """Another worker took the run over: this worker must stop without writing anything more."""


def lease_expiry() -> datetime:
    return timezone.now() + timedelta(seconds=settings.ANVIA_RUN_LEASE_SECONDS)


@dataclass
class Lease:
    """One worker's hold on one run, as the claim numbered it."""

    run_id: object
    attempt: int
    owner: str
    lost: threading.Event = field(default_factory=threading.Event)

    def check(self) -> None:
        """Raise ``LeaseLost`` if the heartbeat already found the run taken over."""
        if self.lost.is_set():
            raise LeaseLost(f"run {self.run_id}: attempt {self.attempt} lost its lease")

    @contextlib.contextmanager
    def fenced(self, **fields) -> Iterator[None]:
        """A transaction that first renews the lease (writing ``fields`` too) and goes on only if
        this attempt still holds the run; else ``LeaseLost``. The update locks the row, so a claim
        by another worker waits for this transaction and then finds the lease renewed."""
        self.check()
        with transaction.atomic():
            if not AgentRun.objects.held(self.run_id, self.attempt).update(
                **{"lease_expires_at": lease_expiry(), **fields}
            ):
                self.mark_lost("a write found the run taken over")
                raise LeaseLost(f"run {self.run_id}: attempt {self.attempt} lost its lease")
            yield

    def mark_lost(self, how: str) -> None:
        if not self.lost.is_set():
            self.lost.set()
            logger.warning(
                "run lease lost run=%s attempt=%s owner=%s: %s; another worker has it, so this one "
                "stops before its next step and writes nothing more",
                self.run_id,
                self.attempt,
                self.owner,
                how,
            )


class LeaseKeeper:
    """The heartbeat of one worker process: renews every lease it holds, in one thread that
    exists only while some run is held (and closes its database connection after each round)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leases: dict[tuple[object, int], Lease] = {}
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def holding(self, lease: Lease) -> Iterator[Lease]:
        key = (lease.run_id, lease.attempt)
        with self._lock:
            self._leases[key] = lease
            if self._thread is None:
                self._thread = threading.Thread(target=self._beat, name="anvia-lease-heartbeat", daemon=True)
                self._thread.start()
        try:
            yield lease
        finally:
            with self._lock:
                self._leases.pop(key, None)

    def _beat(self) -> None:
        pause = threading.Event()
        while True:
            pause.wait(settings.ANVIA_RUN_HEARTBEAT_SECONDS)
            with self._lock:
                held = list(self._leases.values())
                if not held:
                    self._thread = None
                    return
            try:
                for lease in held:
                    if lease.lost.is_set():
                        continue
                    if AgentRun.objects.held(lease.run_id, lease.attempt).update(lease_expires_at=lease_expiry()):
                        continue
                    # Not held: taken over, or this attempt just ended the run itself (then no new claim).
                    claims = AgentRun.objects.filter(pk=lease.run_id).values_list("attempts", flat=True).first()
                    if claims != lease.attempt:
                        lease.mark_lost("the heartbeat found the run taken over")
            except Exception:
                # The database is unreachable: the leases may run out; the fence keeps that safe.
                logger.warning("run lease heartbeat failed for %s runs", len(held), exc_info=True)
            finally:
                connections.close_all()


keeper = LeaseKeeper()
