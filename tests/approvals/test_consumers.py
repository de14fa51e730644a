"""The reviewer websocket through the real ASGI stack: origin check, session auth, group fan-out.

On the in-memory channel layer, except a request and its decision heard through the Redis layer."""

from __future__ import annotations

from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.utils import timezone

from approvals.models import Approval
from approvals.services import ApprovalRequest, approval_decide, approval_expire, approval_request
from tests.factories import ReviewerFactory, UserFactory
from tests.support.sockets import CONNECT_TIMEOUT, RECEIVE_TIMEOUT, session_cookie_for, socket

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.redis,
    pytest.mark.usefixtures("in_memory_channel_layer"),
]

PATH = "/ws/approvals/"


def refund_request(requester_id: int, call_id: str = "call_1") -> ApprovalRequest:
    return ApprovalRequest(
        run_id="run-ws",
        call_id=call_id,
        tool_name="refund_order",
        args={"order_id": "A-1001", "amount": 150.0},
        reason="Review refund of $150.0 for A-1001.",
        requested_by_id=requester_id,
    )


async def reviewer_socket() -> tuple[WebsocketCommunicator, object]:
    reviewer = await database_sync_to_async(ReviewerFactory)()
    communicator = socket(PATH, session=await session_cookie_for(reviewer))
    connected, _ = await communicator.connect(timeout=CONNECT_TIMEOUT)
    assert connected
    return communicator, reviewer


async def test_reviewer_hears_a_request_then_its_decision(redis_channel_layer):
    communicator, reviewer = await reviewer_socket()
    requester = await database_sync_to_async(UserFactory)(username="carol")
    # The socket is one-way; whatever a client sends is ignored and the socket stays up.
    await communicator.send_to(text_data="{not json")

    approval, created = await database_sync_to_async(approval_request)(request=refund_request(requester.pk))
    assert created
    message = await communicator.receive_json_from(timeout=RECEIVE_TIMEOUT)
    assert message["type"] == "approval.created"
    assert message["approval"] == {
        "id": approval.pk,
        "status": "pending",
        "tool_name": "refund_order",
        "reason": "Review refund of $150.0 for A-1001.",
        "requested_by": "carol",
        "created_at": approval.created_at.isoformat(),
        "decided_by": None,
        "decided_at": None,
        "decision_reason": "",
        "quorum": 1,
        "approvals": [],
    }

    await database_sync_to_async(approval_decide)(
        approval_id=approval.pk, reviewer=reviewer, approved=True, reason="Within policy."
    )
    message = await communicator.receive_json_from(timeout=RECEIVE_TIMEOUT)
    assert message["type"] == "approval.decided"
    assert message["approval"]["id"] == approval.pk
    assert message["approval"]["status"] == "approved"
    assert message["approval"]["decided_by"] == reviewer.username
    assert message["approval"]["decision_reason"] == "Within policy."
    assert await communicator.receive_nothing()
    await communicator.disconnect()


async def test_reviewer_hears_an_expiry():
    communicator, _ = await reviewer_socket()
    requester = await database_sync_to_async(UserFactory)()
    approval, _ = await database_sync_to_async(approval_request)(request=refund_request(requester.pk))
    assert (await communicator.receive_json_from(timeout=RECEIVE_TIMEOUT))["type"] == "approval.created"

    await database_sync_to_async(Approval.objects.filter(pk=approval.pk).update)(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert await database_sync_to_async(approval_expire)(approval_id=approval.pk)
    message = await communicator.receive_json_from(timeout=RECEIVE_TIMEOUT)
    assert message["type"] == "approval.expired"
    assert message["approval"]["id"] == approval.pk
    assert message["approval"]["status"] == "expired"
    await communicator.disconnect()


async def test_every_connected_reviewer_hears_each_request():
    first, _ = await reviewer_socket()
    second, _ = await reviewer_socket()
    requester = await database_sync_to_async(UserFactory)()
    approval, _ = await database_sync_to_async(approval_request)(request=refund_request(requester.pk))
    for communicator in (first, second):
        message = await communicator.receive_json_from(timeout=RECEIVE_TIMEOUT)
        assert (message["type"], message["approval"]["id"]) == ("approval.created", approval.pk)
        await communicator.disconnect()


@pytest.mark.parametrize(
    "make_user",
    [
        pytest.param(None, id="anonymous"),
        pytest.param(lambda: UserFactory(), id="customer"),
        pytest.param(lambda: ReviewerFactory(is_staff=False), id="not-staff-with-permission"),
        pytest.param(lambda: ReviewerFactory(can_decide=False), id="staff-without-permission"),
        pytest.param(lambda: ReviewerFactory(is_active=False), id="inactive-reviewer"),
    ],
)
async def test_only_reviewers_may_connect(make_user):
    session = None
    if make_user is not None:
        session = await session_cookie_for(await database_sync_to_async(make_user)())
    communicator = socket(PATH, session=session)
    assert await communicator.connect(timeout=CONNECT_TIMEOUT) == (False, 4403)
    await communicator.disconnect()


async def test_a_user_who_is_refused_hears_nothing_of_later_requests():
    refused = socket(PATH, session=await session_cookie_for(await database_sync_to_async(UserFactory)()))
    assert await refused.connect(timeout=CONNECT_TIMEOUT) == (False, 4403)
    watching, _ = await reviewer_socket()
    requester = await database_sync_to_async(UserFactory)()
    await database_sync_to_async(approval_request)(request=refund_request(requester.pk))
    assert (await watching.receive_json_from(timeout=RECEIVE_TIMEOUT))["type"] == "approval.created"
    assert await refused.receive_nothing()
    await refused.disconnect()
    await watching.disconnect()


@pytest.mark.parametrize(
    "origin",
    [
        pytest.param(b"http://evil.example", id="foreign-origin"),
        pytest.param(b"http://testserver.evil.example", id="look-alike-origin"),
        pytest.param(None, id="no-origin"),
    ],
)
async def test_a_socket_from_another_origin_is_refused_even_for_a_reviewer(origin):
    reviewer = await database_sync_to_async(ReviewerFactory)()
    communicator = socket(PATH, session=await session_cookie_for(reviewer), origin=origin)
    connected, _ = await communicator.connect(timeout=CONNECT_TIMEOUT)
    assert not connected
    await communicator.disconnect()


def in_group(user, name: str):
    from django.contrib.auth.models import Group

    user.groups.add(Group.objects.get_or_create(name=name)[0])
    return user


async def test_a_routed_request_reaches_only_the_reviewers_it_is_for():
    outsider, oscar = await reviewer_socket()
    member = await database_sync_to_async(lambda: in_group(ReviewerFactory(), "finance"))()
    inside = socket(PATH, session=await session_cookie_for(member))
    assert (await inside.connect(timeout=CONNECT_TIMEOUT))[0]
    requester = await database_sync_to_async(UserFactory)()

    request = refund_request(requester.pk)
    routed = ApprovalRequest(**{**request.__dict__, "reviewer_group": "finance", "quorum": 2})
    approval, _ = await database_sync_to_async(approval_request)(request=routed)
    message = await inside.receive_json_from(timeout=RECEIVE_TIMEOUT)
    assert (message["type"], message["approval"]["id"]) == ("approval.created", approval.pk)
    assert set(message) == {"type", "approval"}  # the routing data stays on the server

    voter = await database_sync_to_async(lambda: in_group(ReviewerFactory(username="vic"), "finance"))()
    await database_sync_to_async(approval_decide)(approval_id=approval.pk, reviewer=voter, approved=True)
    message = await inside.receive_json_from(timeout=RECEIVE_TIMEOUT)
    assert message["type"] == "approval.voted"
    assert (message["approval"]["quorum"], message["approval"]["approvals"]) == (2, ["vic"])
    assert await outsider.receive_nothing()

    # Joining the group re-checks the socket at once: the next request reaches them too.
    await database_sync_to_async(in_group)(oscar, "finance")
    later = ApprovalRequest(**{**routed.__dict__, "call_id": "call_2"})
    second, _ = await database_sync_to_async(approval_request)(request=later)
    message = await outsider.receive_json_from(timeout=RECEIVE_TIMEOUT)
    assert (message["type"], message["approval"]["id"]) == ("approval.created", second.pk)
    await outsider.disconnect()
    await inside.disconnect()


async def test_an_escalated_request_reaches_the_escalation_group_then():
    from approvals.escalation import approvals_escalate_overdue

    manager = await database_sync_to_async(lambda: in_group(ReviewerFactory(), "managers"))()
    managers = socket(PATH, session=await session_cookie_for(manager))
    assert (await managers.connect(timeout=CONNECT_TIMEOUT))[0]
    requester = await database_sync_to_async(UserFactory)()
    request = ApprovalRequest(
        **{
            **refund_request(requester.pk).__dict__,
            "reviewer_group": "support",
            "escalate_after": 0,
            "escalate_to": "managers",
        }
    )
    approval, _ = await database_sync_to_async(approval_request)(request=request)
    assert await managers.receive_nothing()  # not theirs yet

    assert await database_sync_to_async(approvals_escalate_overdue)() == 1
    message = await managers.receive_json_from(timeout=RECEIVE_TIMEOUT)
    assert (message["type"], message["approval"]["id"]) == ("approval.escalated", approval.pk)
    await managers.disconnect()
