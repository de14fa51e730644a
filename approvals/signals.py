"""``approval_decided``: sent after commit when an approval leaves pending (decided or expired).

Other apps subscribe (the agents app enqueues the resume of a suspended run) so that approvals
never imports them.
"""

from __future__ import annotations

from django.dispatch import Signal

approval_decided = Signal()  # sender=Approval, approval=<Approval>
