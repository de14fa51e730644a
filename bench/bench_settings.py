"""Settings for the benches: the project's, with channel-layer keys under a prefix of their own
(and the offline model answering at once, below).

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

# The offline model's simulated typing (0.04 s a word by default, for the demo) would put ~0.2 s of
# sleep into every chat and hide the code's own cost; the benches measure the code. Override with
# ``--env ANVIA_OFFLINE_WORD_DELAY_SECONDS=...`` (read from the environment) to see it.
import os as _os  # noqa: E402

ANVIA_OFFLINE_WORD_DELAY_SECONDS = float(_os.environ.get("ANVIA_OFFLINE_WORD_DELAY_SECONDS", "0"))
