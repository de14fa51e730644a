"""The one change outside bench/ still only proposed, applied only inside the bench process.

``approval_wait_lean`` for ``approvals.services.approval_wait``: the same loop, reading only the
columns a ``Decision`` needs with ``.values()`` instead of ``select_related("decided_by").get()``
(the ORM building a 21-column model plus its user is most of the waiter's re-read).
``bench/decision_latency.py --rows lean-redis`` measures it beside the real ``service-redis``.

It is a copy of ``approval_wait``'s loop: ``check_still_mirrors()`` refuses to run it once the
real function no longer re-reads the row the way this copy replaces.
(The other changes these benches proposed - the reviewer consumer skipping channels' per-message
``close_old_connections`` hop, and channel-layer sends on one long-lived loop per process - are
in the code since b013df0 and are measured as they are.)
"""

from __future__ import annotations

import inspect
import time

MIRRORED_READ = 'Approval.objects.select_related("decided_by").get(pk=approval_id)'


def check_still_mirrors() -> None:
    import approvals.services as services

    if MIRRORED_READ not in inspect.getsource(services.approval_wait):
        raise SystemExit(
            "approvals.services.approval_wait changed: bench/proposed_changes.py's approval_wait_lean no longer "
            "mirrors it; update or drop the lean-redis row."
        )


def approval_wait_lean(*, approval_id: int, timeout: float | None):
    """``approval_wait`` reading only what a ``Decision`` needs."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    import approvals.services as services
    from approvals.models import Approval

    decider = f"decided_by__{get_user_model().USERNAME_FIELD}"
    columns = ("status", "expires_at", "decision_reason", decider, "args", "edited_args")
    channel = services.get_decision_channel()
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        row = Approval.objects.filter(pk=approval_id).values(*columns).get()
        if row["status"] != Approval.Status.PENDING:
            edited = row["edited_args"]
            return services.Decision(
                approval_id=approval_id,
                status=row["status"],
                reason=row["decision_reason"],
                decided_by=row[decider],
                args=edited if edited is not None else row["args"],
                edited=edited is not None,
            )
        now = timezone.now()
        if row["expires_at"] <= now:
            services.approval_expire(approval_id=approval_id)
            continue
        until_expiry = (row["expires_at"] - now).total_seconds()
        remaining = until_expiry if deadline is None else min(deadline - time.monotonic(), until_expiry)
        if deadline is not None and deadline - time.monotonic() <= 0:
            return None
        channel.wait(approval_id, remaining)
