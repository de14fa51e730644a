"""The chat websocket through the real ASGI stack: origin check, session auth, owner only, live runs."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from agents.services import conversation_create, conversation_group, conversation_post_message, run_execute
from anvia_project.asgi import application
from shop.models import Order
from tests.factories import UserFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]

RECEIVE_TIMEOUT = 5
# The default 1 s is too tight for the consumer's auth and group_add on a loaded 2-core machine.
CONNECT_TIMEOUT = 10


@database_sync_to_async
def session_cookie_for(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def socket(
    conversation_id: int, *, session: str | None = None, origin: bytes | None = b"http://testserver"
) -> WebsocketCommunicator:
    headers = [(b"host", b"testserver")]
    if origin is not None:
        headers.append((b"origin", origin))
    if session is not None:
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={session}".encode()))
    return WebsocketCommunicator(application, f"/ws/conversations/{conversation_id}/", headers=headers)


@database_sync_to_async
def customer_with_conversation(username: str = "alice", order_number: str = "A-1001"):
    customer = UserFactory(username=username)
    Order.objects.create(
        number=order_number, customer=customer, description="Espresso machine", total="249.00", status="delivered"
    )
    return customer, conversation_create(user=customer)


async def owner_socket():
    customer, conversation = await customer_with_conversation()
    communicator = socket(conversation.pk, session=await session_cookie_for(customer))
    connected, _ = await communicator.connect(timeout=CONNECT_TIMEOUT)
    assert connected
    return communicator, conversation


async def test_the_owner_hears_run_events_with_their_plain_words():
    communicator, conversation = await owner_socket()
    # The socket is one-way; whatever a client sends is ignored and the socket stays up.
    await communicator.send_to(text_data="{not json")

    await get_channel_layer().group_send(
        conversation_group(conversation.pk),
        {
            "type": "run.event",
            "run_id": "run-1",
            "event": "approval_requested",
            "data": {"tool_name": "refund_order", "reason": "Review refund of $150.00 for A-1001."},
        },
    )
    assert await communicator.receive_json_from(timeout=RECEIVE_TIMEOUT) == {
        "type": "run.event",
        "run_id": "run-1",
        "event": "approval_requested",
        "data": {"tool_name": "refund_order", "reason": "Review refund of $150.00 for A-1001."},
        "item": {"kind": "waiting", "text": "Waiting for a reviewer: Review refund of $150.00 for A-1001."},
    }

    await get_channel_layer().group_send(
        conversation_group(conversation.pk), {"type": "run.suspended", "run_id": "run-1"}
    )
    assert await communicator.receive_json_from(timeout=RECEIVE_TIMEOUT) == {"type": "run.suspended", "run_id": "run-1"}

    await get_channel_layer().group_send(
        conversation_group(conversation.pk),
        {"type": "run.finished", "run_id": "run-1", "status": "succeeded", "text": "Done."},
    )
    assert await communicator.receive_json_from(timeout=RECEIVE_TIMEOUT) == {
        "type": "run.finished",
        "run_id": "run-1",
        "status": "succeeded",
        "text": "Done.",
    }
    assert await communicator.receive_nothing()
    await communicator.disconnect()


async def test_the_owner_follows_a_real_run_to_its_answer(monkeypatch):
    monkeypatch.setattr("agents.services.run_enqueue", lambda *, run_id: None)
    communicator, conversation = await owner_socket()

    run = await database_sync_to_async(conversation_post_message)(
        conversation=conversation, content="where is my order A-1001?"
    )
    await database_sync_to_async(run_execute)(run_id=run.pk)

    heard = []
    while not heard or heard[-1]["type"] != "run.finished":
        heard.append(await communicator.receive_json_from(timeout=RECEIVE_TIMEOUT))
    assert {message["run_id"] for message in heard} == {str(run.pk)}
    assert [m["item"]["text"] for m in heard if m.get("item")] == [
        "Calling lookup_order: order_id: A-1001",
        "lookup_order finished: description: Espresso machine, order_id: A-1001, refundable: 249.0, "
        "refunded: 0.0, status: delivered, total: 249.0",
    ]
    assert heard[-1] == {
        "type": "run.finished",
        "run_id": str(run.pk),
        "status": "succeeded",
        "text": "Order A-1001 is delivered, total $249.00.",
    }
    await communicator.disconnect()


async def test_another_customer_is_refused_and_hears_nothing():
    _, conversation = await customer_with_conversation("alice")
    bob, _ = await customer_with_conversation("bob", "B-2001")
    refused = socket(conversation.pk, session=await session_cookie_for(bob))
    assert await refused.connect(timeout=CONNECT_TIMEOUT) == (False, 4403)

    await get_channel_layer().group_send(
        conversation_group(conversation.pk), {"type": "run.suspended", "run_id": "run-1"}
    )
    assert await refused.receive_nothing()
    await refused.disconnect()


async def test_anonymous_visitors_are_refused_even_for_a_missing_conversation():
    _, conversation = await customer_with_conversation()
    for conversation_id in (conversation.pk, 999999):
        communicator = socket(conversation_id)
        assert await communicator.connect(timeout=CONNECT_TIMEOUT) == (False, 4403)
        await communicator.disconnect()


async def test_a_missing_conversation_is_4404():
    customer, _ = await customer_with_conversation()
    communicator = socket(999999, session=await session_cookie_for(customer))
    assert await communicator.connect(timeout=CONNECT_TIMEOUT) == (False, 4404)
    await communicator.disconnect()


@pytest.mark.parametrize(
    "origin",
    [
        pytest.param(b"http://evil.example", id="foreign-origin"),
        pytest.param(b"http://testserver.evil.example", id="look-alike-origin"),
        pytest.param(None, id="no-origin"),
    ],
)
async def test_a_socket_from_another_origin_is_refused_even_for_the_owner(origin):
    customer, conversation = await customer_with_conversation()
    communicator = socket(conversation.pk, session=await session_cookie_for(customer), origin=origin)
    connected, _ = await communicator.connect(timeout=CONNECT_TIMEOUT)
    assert not connected
    await communicator.disconnect()
