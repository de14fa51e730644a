"""A live Daphne server (HTTP + websockets) for browser tests, safe to start mid-session."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import SyncToAsync
from channels.testing import ChannelsLiveServerTestCase
from daphne.testing import DaphneProcess


class ForkSafeDaphneProcess(DaphneProcess):
    """Daphne in a forked child, without the test process's dead executor thread.

    Threads do not survive ``fork()``. Once the test process has run ``database_sync_to_async``
    (any websocket consumer test earlier in the session), asgiref's shared executor believes it
    still has its worker, so in the child every consumer's database call waits forever.
    """

    def run(self) -> None:
        SyncToAsync.single_thread_executor = ThreadPoolExecutor(max_workers=1)
        super().run()


class LiveServerTestCase(ChannelsLiveServerTestCase):
    """``ChannelsLiveServerTestCase`` whose server works whatever ran before it in the session."""

    ProtocolServerProcess = ForkSafeDaphneProcess
