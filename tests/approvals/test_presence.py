"""Who else has an approval's page open (best-effort presence in the cache)."""

from __future__ import annotations

import pytest

from approvals.presence import VIEWING_TTL_SECONDS, approval_viewing, approval_viewing_stopped
from tests.factories import ApprovalFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_each_viewer_sees_the_others_until_they_leave_or_go_quiet():
    assert approval_viewing(approval_id=7, username="rita", now=1000.0) == []
    assert approval_viewing(approval_id=7, username="bob", now=1001.0) == ["rita"]
    assert approval_viewing(approval_id=7, username="rita", now=1002.0) == ["bob"]
    assert approval_viewing(approval_id=8, username="ann", now=1002.0) == []  # another approval

    approval_viewing_stopped(approval_id=7, username="bob")
    assert approval_viewing(approval_id=7, username="rita", now=1003.0) == []

    approval_viewing(approval_id=7, username="bob", now=1004.0)
    quiet_for = 1004.0 + VIEWING_TTL_SECONDS
    assert approval_viewing(approval_id=7, username="rita", now=quiet_for) == []


def test_the_heartbeat_is_for_reviewers_only(client, reviewer):
    approval = ApprovalFactory()
    url = f"/review/{approval.pk}/viewing/"
    client.force_login(UserFactory(username="mallory"))
    assert client.post(url).status_code == 403

    client.force_login(reviewer)
    body = client.post(url).json()

    assert body == {"viewers": [], "refresh_seconds": 10}
    assert client.get(url).status_code == 405
