"""Celery's Redis transport, with one fix: a worker survives a Redis restart while tasks are in flight.

``install()`` (called by ``anvia_project/celery.py``) makes ``redis://`` broker URLs use it, so URLs,
logs, Flower and celery's ``driver_type == "redis"`` checks stay as they were; everything else is
kombu's own Redis transport.

The bug (kombu 5.7.0 with redis-py 8.1 and celery 5.7.0; the code involved is unchanged since kombu
4.x, so check again before removing this on an upgrade). When the broker connection drops, celery's
consumer (``Consumer.on_connection_error_after_connected``) first calls ``connection.collect()``,
then ``connection.close()``:

1. ``collect()`` closes the channels, but ``redis.Channel.close()`` begins by draining the pending
   ``BRPOP`` (``_brpop_read``) and only catches ``Empty``: on the dead socket it raises a
   ``ConnectionError`` and leaves the channel open. ``collect()`` swallows that and then detaches
   the transport from its ``Connection`` (``Connection._do_close_transport``:
   ``transport.client = None``).
2. ``close()`` closes the channel again. This time it gets through: it drops its connection pools
   (``_disconnect_pools``) and, in ``virtual.Channel.close``, restores the messages it delivered but
   nobody acknowledged (``QoS.restore_unacked``). That needs a Redis client, so a new pool, whose
   parameters ``Channel._connparams`` reads from ``self.connection.client`` - now ``None``:
   ``AttributeError: 'NoneType' object has no attribute 'hostname'``. It is not a connection error,
   so ``ignore_errors`` lets it through and the worker stops with "Unrecoverable error".

Only a channel holding unacknowledged messages needs a client while closing, which is why an idle
worker reconnects fine and one with a run in flight (``acks_late``: a run blocked on a decision, or
mid-step) dies. The same missing link breaks the task's own late acknowledgement when it finishes
on the old channel after the reconnect (``Transport.close_channel`` also sets
``channel.connection = None``): the ack fails, and the message would sit in the unacked hash
until ``visibility_timeout`` and then be delivered again.

Reproduction without this project (plain celery, threads pool, an ``acks_late`` task sleeping 20 s,
Redis stopped and started while it runs): see "Operations: Redis restarts, crashed processes" in the README.

The fix: a channel remembers the parameters it connected with and uses them once its transport is
gone, so the restore at close and a late ack still reach Redis - and when Redis is still down, they
fail with a Redis ``ConnectionError``, which celery handles (it retries the connection; the message
stays in the unacked hash and ``visibility_timeout`` delivers it again if nobody acknowledges it).
"""

from __future__ import annotations

import kombu.transport
import redis
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _last_connparams: dict | None = None

    def _connparams(self, asynchronous: bool = False) -> dict:
        transport = self.connection
        if transport is not None and transport.client is not None:
            params = super()._connparams(asynchronous=asynchronous)
            if not asynchronous:
                # The plain (not poller-registered) parameters: all a closed channel needs.
                self._last_connparams = params
            return params
        if self._last_connparams is None or asynchronous:
            # Consuming on a closed channel makes no sense; say so as the connection error it is.
            raise redis.exceptions.ConnectionError("The broker channel is closed.")
        return dict(self._last_connparams)


class Transport(kombu_redis.Transport):
    Channel = Channel


def install() -> None:
    """Make ``redis://`` and ``rediss://`` broker URLs use :class:`Transport` (before any connection)."""
    for scheme in ("redis", "rediss"):
        kombu.transport.TRANSPORT_ALIASES[scheme] = f"{__name__}:Transport"
        # kombu caches a resolved alias; forget one resolved before we were imported.
        getattr(kombu.transport, "_transport_cache", {}).pop(scheme, None)
        if kombu.transport.get_transport_cls(scheme) is not Transport:  # kombu changed how it resolves
            raise RuntimeError(f"Could not register the patched Redis transport for {scheme}://.")
