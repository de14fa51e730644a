"""Sockets end with the right to them (issue 9, item 9): a reviewer socket closes on logout and
when the permission is withdrawn, a customer socket when the session ends. Through the real
ASGI stack, on the in-memory channel layer (the consumer tests take one socket of each kind
through Redis)."""

from __future__ import annotations

import time

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import Permission
from django.contrib.sessions.models import Session
from django.test import Client

from agents.services import conversation_create
from anvia_project.socket_sessions import CLOSE_FORBIDDEN, CLOSE_SIGNED_OUT
from approvals.services import ApprovalRequest, approval_request
from tests.factories import ReviewerFactory, UserFactory
from tests.support.sockets import CONNECT_TIMEOUT, socket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("in_memory_channel_layer")]
# Upper bound for a close to arrive on a loaded machine; the assertions say how soon it must be.
CLOSE_WITHIN = 10
# A change of rights reaches the socket by a signal, not by the periodic re-check (60 s by default).
AT_ONCE = 2


@database_sync_to_async
def signed_in_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


async def connected(path: str, client: Client) -> WebsocketCommunicator:
    communicator = socket(path, session=client.cookies[settings.SESSION_COOKIE_NAME].value)
    ok, _ = await communicator.connect(timeout=CONNECT_TIMEOUT)
    assert ok
    return communicator


async def closed_within(communicator: WebsocketCommunicator, seconds: float) -> tuple[int, float]:
    """The close code the server sent, and how long it took (other frames are skipped)."""
    started = time.monotonic()
    while True:
        remaining = seconds - (time.monotonic() - started)
        assert remaining > 0, "the socket is still open"
        output = await communicator.receive_output(timeout=remaining)
        if output["type"] == "websocket.close":
            return output.get("code"), time.monotonic() - started


async def stays_open(communicator: WebsocketCommunicator, seconds: float) -> bool:
    return await communicator.receive_nothing(timeout=seconds, interval=0.05)


def logout(client: Client) -> None:
    assert client.post("/accounts/logout/").status_code == 302


async def test_a_reviewer_socket_closes_at_once_on_logout():
    client = await signed_in_client(await database_sync_to_async(ReviewerFactory)())
    communicator = await connected("/ws/approvals/", client)

    await database_sync_to_async(logout)(client)

    code, took = await closed_within(communicator, CLOSE_WITHIN)
    assert code == CLOSE_SIGNED_OUT
    assert took < 2  # the logout signal, not the periodic re-check
    await communicator.disconnect()


async def test_a_reviewer_socket_closes_at_once_on_losing_the_permission():
    assert settings.ANVIA_SOCKET_RECHECK_SECONDS == 60  # the real default: the signal must do it
    reviewer = await database_sync_to_async(ReviewerFactory)()
    client = await signed_in_client(reviewer)
    communicator = await connected("/ws/approvals/", client)
    requester = await database_sync_to_async(UserFactory)()

    def withdraw() -> None:
        reviewer.user_permissions.remove(Permission.objects.get(codename="decide_approval"))

    await database_sync_to_async(withdraw)()
    # Whatever is broadcast meanwhile may still arrive; what matters is the close.
    await database_sync_to_async(approval_request)(
        request=ApprovalRequest(
            run_id="run-perm",
            call_id="call_1",
            tool_name="refund_order",
            args={"order_id": "A-1001", "amount": 150.0},
            reason="Review refund.",
            requested_by_id=requester.pk,
        )
    )

    code, took = await closed_within(communicator, CLOSE_WITHIN)
    assert code == CLOSE_FORBIDDEN
    assert took < AT_ONCE
    await communicator.disconnect()


async def test_a_reviewer_socket_closes_at_once_when_their_groups_permission_goes():
    from django.contrib.auth.models import Group

    def reviewer_by_group():
        group = Group.objects.create(name="refund reviewers")
        group.permissions.add(Permission.objects.get(codename="decide_approval"))
        user = ReviewerFactory(can_decide=False)
        user.groups.add(group)
        return user, group

    reviewer, group = await database_sync_to_async(reviewer_by_group)()
    communicator = await connected("/ws/approvals/", await signed_in_client(reviewer))

    await database_sync_to_async(group.permissions.clear)()

    code, took = await closed_within(communicator, CLOSE_WITHIN)
    assert code == CLOSE_FORBIDDEN
    assert took < AT_ONCE
    await communicator.disconnect()


async def test_a_reviewer_socket_stays_open_when_someone_elses_rights_change():
    reviewer = await database_sync_to_async(ReviewerFactory)()
    other = await database_sync_to_async(ReviewerFactory)()
    communicator = await connected("/ws/approvals/", await signed_in_client(reviewer))

    await database_sync_to_async(other.user_permissions.clear)()

    assert await stays_open(communicator, 1.0)
    await communicator.disconnect()


async def test_a_reviewer_socket_closes_when_the_session_is_deleted(settings):
    settings.ANVIA_SOCKET_RECHECK_SECONDS = 0.5
    client = await signed_in_client(await database_sync_to_async(ReviewerFactory)())
    communicator = await connected("/ws/approvals/", client)

    await database_sync_to_async(lambda: Session.objects.all().delete())()

    code, _ = await closed_within(communicator, CLOSE_WITHIN)
    assert code == CLOSE_SIGNED_OUT
    await communicator.disconnect()


async def test_an_authorized_socket_stays_open_across_rechecks(settings):
    settings.ANVIA_SOCKET_RECHECK_SECONDS = 0.2
    client = await signed_in_client(await database_sync_to_async(ReviewerFactory)())
    communicator = await connected("/ws/approvals/", client)

    assert await stays_open(communicator, 1.5)
    await communicator.disconnect()


async def test_a_customer_socket_closes_at_once_on_logout(alice):
    conversation = await database_sync_to_async(conversation_create)(user=alice)
    client = await signed_in_client(alice)
    communicator = await connected(f"/ws/conversations/{conversation.pk}/", client)

    await database_sync_to_async(logout)(client)

    code, took = await closed_within(communicator, CLOSE_WITHIN)
    assert code == CLOSE_SIGNED_OUT
    assert took < 2
    await communicator.disconnect()


async def test_a_customer_socket_closes_at_once_when_the_account_is_deactivated(alice):
    conversation = await database_sync_to_async(conversation_create)(user=alice)
    client = await signed_in_client(alice)
    communicator = await connected(f"/ws/conversations/{conversation.pk}/", client)

    alice.is_active = False
    await database_sync_to_async(alice.save)()

    code, took = await closed_within(communicator, CLOSE_WITHIN)
    assert code == CLOSE_SIGNED_OUT
    assert took < AT_ONCE
    await communicator.disconnect()


async def test_logging_out_elsewhere_leaves_other_sessions_open(settings):
    settings.ANVIA_SOCKET_RECHECK_SECONDS = 0.2
    reviewer = await database_sync_to_async(ReviewerFactory)()
    laptop, phone = await signed_in_client(reviewer), await signed_in_client(reviewer)
    on_laptop = await connected("/ws/approvals/", laptop)
    on_phone = await connected("/ws/approvals/", phone)

    await database_sync_to_async(logout)(phone)

    code, _ = await closed_within(on_phone, CLOSE_WITHIN)
    assert code == CLOSE_SIGNED_OUT
    assert await stays_open(on_laptop, 1.0)
    await on_laptop.disconnect()
    await on_phone.disconnect()
