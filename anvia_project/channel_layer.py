"""Sending to channel-layer groups from sync code: services, admin actions, Celery workers."""

from __future__ import annotations

import asyncio
import os
import threading

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid = 0


def _sending_loop() -> asyncio.AbstractEventLoop:
    # async_to_sync would start a new event loop, thread and Redis connection for every message
    # (~5 ms each, measured in bench/decision_latency.py); one long-lived loop per process costs
    # ~0.3 ms a send. A forked child (live test server, prefork worker) starts its own.
    global _loop, _loop_pid
    with _lock:
        if _loop is None or _loop_pid != os.getpid():
            _loop, _loop_pid = asyncio.new_event_loop(), os.getpid()
            threading.Thread(target=_loop.run_forever, name="channel-layer-send", daemon=True).start()
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
