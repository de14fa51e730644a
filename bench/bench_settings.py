"""Settings for the benches: the project's, with channel-layer keys under a prefix of their own.

A shared Redis (``REDIS_URL``) then never delivers a test suite's or a dev server's group
messages to the bench's sockets, or the bench's to theirs. The layer is the project's, as it runs.
"""

from __future__ import annotations

from anvia_project.settings import *  # noqa: F403
from anvia_project.settings import CHANNEL_LAYERS

BENCH_PREFIX = "anvia-bench"

if "CONFIG" in CHANNEL_LAYERS["default"]:  # the Redis layers (the in-memory one shares nothing)
    _layer = CHANNEL_LAYERS["default"]
    CHANNEL_LAYERS = {"default": {**_layer, "CONFIG": {**_layer["CONFIG"], "prefix": BENCH_PREFIX}}}
