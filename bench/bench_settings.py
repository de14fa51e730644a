"""Settings for the benches: the project's, with the channel layer under test and a prefix of their own.

``BENCH_CHANNEL_LAYER`` is ``pubsub`` (``RedisPubSubChannelLayer``, the project's choice, the
default) or ``core`` (``RedisChannelLayer``, ``reviewer_fanout.py --configs daphne/core``). Both get
a ``prefix`` of their own so that a shared Redis (``REDIS_URL``) never delivers a test suite's or
a dev server's group messages to the bench's sockets, or the bench's to theirs.
"""

from __future__ import annotations

import os
import secrets

# DEBUG is off by default, so the settings need a key; child processes (daphne) inherit this one.
os.environ.setdefault("DJANGO_SECRET_KEY", "bench-" + secrets.token_hex(16))

from anvia_project.settings import *  # noqa: F403
from anvia_project.settings import REDIS_MAX_CONNECTIONS, REDIS_URL

BENCH_PREFIX = "anvia-bench"


def channel_layers(kind: str) -> dict:
    hosts = [{"address": REDIS_URL, "max_connections": REDIS_MAX_CONNECTIONS}]
    if kind == "core":
        backend = "channels_redis.core.RedisChannelLayer"
    elif kind == "pubsub":
        backend = "channels_redis.pubsub.RedisPubSubChannelLayer"
    else:
        raise ValueError(f"BENCH_CHANNEL_LAYER must be 'pubsub' or 'core', not {kind!r}")
    return {"default": {"BACKEND": backend, "CONFIG": {"hosts": hosts, "prefix": BENCH_PREFIX}}}


CHANNEL_LAYERS = channel_layers(os.environ.get("BENCH_CHANNEL_LAYER", "pubsub"))
