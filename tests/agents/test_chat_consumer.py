"""The chat websocket through the real ASGI stack: origin check, session auth, owner only, live runs.

On the in-memory channel layer, except a real run followed through the Redis layer."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from agents.services import conversation_create, conversation_group, conversation_post_message, run_execute
from tests.support.sockets import CONNECT_TIMEOUT, RECEIVE_TIMEOUT, session_cookie_for, socket

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.redis,
    pytest.mark.usefixtures("in_memory_channel_layer"),
]


@pytest.fixture
def conversation(alice):
    """Alice's conversation."""
    return conversation_create(user=alice)


def conversation_socket(conversation_id: int, **options):
    return socket(f"/ws/conversations/{conversation_id}/", **options)


async def owner_socket(alice, conversation):
    communicator = conversation_socket(conversation.pk, session=await session_cookie_for(alice))
    connected, _ = await communicator.connect(timeout=CONNECT_TIMEOUT)
    assert connected
    return communicator


async def test_the_owner_hears_run_events_with_their_plain_words(alice, conversation):
    communicator = await owner_socket(alice, conversation)
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
        "item": {"kind": "waiting", "text": "A staff member needs to approve the next step.", "key": ""},
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


async def test_the_owner_follows_a_real_run_to_its_answer(alice, conversation, queued, redis_channel_layer):
    communicator = await owner_socket(alice, conversation)

    run = await database_sync_to_async(conversation_post_message)(
        conversation=conversation, content="where is my order A-1001?"
    )
    await database_sync_to_async(run_execute)(run_id=run.pk)

    heard = [await communicator.receive_json_from(timeout=RECEIVE_TIMEOUT)]
    while heard[-1]["type"] != "run.finished":
        assert len(heard) < 20, f"no run.finished in {heard}"
        heard.append(await communicator.receive_json_from(timeout=RECEIVE_TIMEOUT))
    assert {message["run_id"] for message in heard} == {str(run.pk)}
    assert [m["item"]["text"] for m in heard if m.get("item")] == [
        "Checking your order A-1001…",
        "Found order A-1001 (delivered).",
    ]
    assert heard[-1] == {
        "type": "run.finished",
        "run_id": str(run.pk),
        "status": "succeeded",
        "text": "Order A-1001 is delivered, total $249.00.",
    }
    await communicator.disconnect()


async def test_another_customer_is_refused_and_hears_nothing(conversation, bob):
    refused = conversation_socket(conversation.pk, session=await session_cookie_for(bob))
    assert await refused.connect(timeout=CONNECT_TIMEOUT) == (False, 4403)

    await get_channel_layer().group_send(
        conversation_group(conversation.pk), {"type": "run.suspended", "run_id": "run-1"}
    )
    assert await refused.receive_nothing()
    await refused.disconnect()


async def test_anonymous_visitors_are_refused_even_for_a_missing_conversation(conversation):
    for conversation_id in (conversation.pk, 999999):
        communicator = conversation_socket(conversation_id)
        assert await communicator.connect(timeout=CONNECT_TIMEOUT) == (False, 4403)
        await communicator.disconnect()


async def test_a_missing_conversation_is_4404(alice):
    communicator = conversation_socket(999999, session=await session_cookie_for(alice))
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
async def test_a_socket_from_another_origin_is_refused_even_for_the_owner(alice, conversation, origin):
    communicator = conversation_socket(conversation.pk, session=await session_cookie_for(alice), origin=origin)
    connected, _ = await communicator.connect(timeout=CONNECT_TIMEOUT)
    assert not connected
    await communicator.disconnect()
