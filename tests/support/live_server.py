"""A live Daphne server (HTTP + websockets) for browser tests, safe to start mid-session."""

from __future__ import annotations

import contextlib
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


class LiveServerWithWorkerTestCase(LiveServerTestCase):
    """A live server plus one real Celery worker (threads pool) in this process for the class: it
    sees the class's settings overrides, and the test database the live server uses."""

    worker_concurrency = 4

    @classmethod
    def setUpClass(cls):
        from tests.support.workers import thread_worker

        super().setUpClass()
        cls._worker = contextlib.ExitStack()
        try:
            cls._worker.enter_context(thread_worker(concurrency=cls.worker_concurrency, shutdown_timeout=45))
        except BaseException:
            super().tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls._worker.close()
        finally:
            super().tearDownClass()
