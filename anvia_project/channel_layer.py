"""Sending to channel-layer groups from sync code: services, admin actions, Celery workers."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer

logger = logging.getLogger("anvia.channel_layer")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid = 0
_outbox: asyncio.Queue | None = None

Merge = Callable[[dict, dict], "dict | None"]


def _sending_loop() -> asyncio.AbstractEventLoop:
    # async_to_sync would start a new event loop, thread and Redis connection for every message
    # (~5 ms each, measured in bench/decision_latency.py); one long-lived loop per process costs
    # ~0.3 ms a send. A forked child (live test server, prefork worker) starts its own.
    global _loop, _loop_pid, _outbox
    with _lock:
        if _loop is None or _loop_pid != os.getpid():
            _loop, _loop_pid, _outbox = asyncio.new_event_loop(), os.getpid(), asyncio.Queue()
            threading.Thread(target=_loop.run_forever, name="channel-layer-send", daemon=True).start()
            asyncio.run_coroutine_threadsafe(_send_queued(_outbox), _loop)
        return _loop


def group_send(group: str, message: dict, *, timeout: float = 5.0) -> None:
    """Send ``message`` to ``group``; raises when the layer fails or takes over ``timeout``."""
    layer = get_channel_layer()
    if layer is None:
        return
    if isinstance(layer, InMemoryChannelLayer):
        # Its queues belong to the loop that serves the sockets; don't touch them from another.
        async_to_sync(layer.group_send)(group, message)
        return
    asyncio.run_coroutine_threadsafe(layer.group_send(group, message), _sending_loop()).result(timeout)


def group_send_soon(group: str, message: dict, *, merge: Merge | None = None) -> None:
    """Queue ``message`` for ``group`` and return at once, for senders that must not wait on
    Redis (a run streaming its progress). Queued messages go out one at a time in the order they
    were queued, so a group sees them in that order; a failure is logged, never raised (a page
    reloads to the truth in the database).

    ``merge(previous, message)``: when the message queued just before this one, for the same
    group, has not gone out yet, the one message to send instead of both (or ``None``: both).
    Pieces of a streamed answer queued faster than they are sent go out as one."""
    layer = get_channel_layer()
    if layer is None:
        return
    if isinstance(layer, InMemoryChannelLayer):
        if _loop_running_here():  # async_to_sync refuses to run here: it would block this loop
            sender = threading.Thread(target=async_to_sync(layer.group_send), args=(group, message))
            sender.start()
            sender.join()
        else:
            async_to_sync(layer.group_send)(group, message)
        return
    loop = _sending_loop()
    loop.call_soon_threadsafe(_outbox.put_nowait, (layer, group, message, merge))


def _loop_running_here() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def _send_queued(outbox: asyncio.Queue) -> None:
    while True:
        batch = [await outbox.get()]
        while not outbox.empty():
            batch.append(outbox.get_nowait())
        for layer, group, message in _merged(batch):
            try:
                await asyncio.wait_for(layer.group_send(group, message), 5.0)
            except Exception:
                logger.warning("could not send %s to %s", message.get("type"), group, exc_info=True)


def _merged(batch: list) -> list[tuple]:
    """The batch in order, each message merged into the one queued just before it for the same
    group when its sender allows (other groups' messages in between are kept in their place)."""
    out: list[tuple] = []
    last_for_group: dict[str, int] = {}
    for layer, group, message, merge in batch:
        index = last_for_group.get(group)
        if merge is not None and index is not None and index == len(out) - 1:
            merged = merge(out[index][2], message)
            if merged is not None:
                out[index] = (layer, group, merged)
                continue
        out.append((layer, group, message))
        last_for_group[group] = len(out) - 1
    return out
