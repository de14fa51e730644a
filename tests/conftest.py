"""Fixtures shared by the whole suite: the people (``alice``, ``bob``, ``reviewer``), their
clients, runs queued instead of sent, the decision waiters, and the channel layer."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import pytest
from rest_framework.test import APIClient

from tests.factories import OrderFactory, ReviewerFactory, UserFactory


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis server the suite runs against (``make test`` starts one when REDIS_URL is unset)."""
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.fail("REDIS_URL is unset: run the suite with `make test`, which starts an embedded Redis.")
    return url


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> None:
    """Rate-limit counts (the per-process cache of the test settings) start empty in every test."""
    from django.core.cache import cache

    cache.clear()


# ---- people ---------------------------------------------------------------------------------


@pytest.fixture
def alice():
    """A customer with three orders: A-1001 (delivered, $249), A-1003 (placed, $45) and A-1004
    (delivered, $300)."""
    customer = UserFactory(username="alice")
    OrderFactory(number="A-1001", customer=customer, description="Espresso machine", total="249.00", status="delivered")
    OrderFactory(number="A-1003", customer=customer, description="Frother", total="45.00")
    OrderFactory(number="A-1004", customer=customer, description="Kettle", total="300.00", status="delivered")
    return customer


@pytest.fixture
def bob():
    """Another customer, with order B-2001 (placed, a $520 desk)."""
    customer = UserFactory(username="bob")
    OrderFactory(number="B-2001", customer=customer, description="Desk", total="520.00")
    return customer


@pytest.fixture
def reviewer():
    """Rita, staff who may decide approvals."""
    return ReviewerFactory(username="rita")


# ---- their clients --------------------------------------------------------------------------


@pytest.fixture
def api_for() -> Callable[..., APIClient]:
    """``api_for(user)``: an API client authenticated as ``user``."""

    def make(user) -> APIClient:
        client = APIClient()
        client.force_authenticate(user)
        return client

    return make


@pytest.fixture
def alice_api(api_for, alice) -> APIClient:
    return api_for(alice)


@pytest.fixture
def reviewer_api(api_for, reviewer) -> APIClient:
    return api_for(reviewer)


@pytest.fixture
def reviewer_client(client, reviewer):
    """Django's test client, logged in as ``reviewer``."""
    client.force_login(reviewer)
    return client


# ---- runs, decisions, sockets ---------------------------------------------------------------


@pytest.fixture
def queued(monkeypatch) -> list[str]:
    """The ids of the runs that would go to Celery, recorded instead of sent."""
    runs: list[str] = []
    monkeypatch.setattr("agents.services.run_enqueue", lambda *, run_id: runs.append(str(run_id)))
    return runs


@pytest.fixture
def suspending(queued, settings) -> list[str]:
    """``queued``, and runs suspend at once on a protected call (no blocking on the decision)."""
    settings.ANVIA_APPROVAL_BLOCK_SECONDS = 0
    return queued


class DecisionWaiters:
    """Tells a test when somebody (a run, ``approval_wait``) starts waiting for a decision."""

    def __init__(self) -> None:
        self.approval_ids: list[int] = []
        self._waiting = threading.Condition()

    def entered(self, approval_id: int) -> None:
        with self._waiting:
            self.approval_ids.append(approval_id)
            self._waiting.notify_all()

    def first(self, *, timeout: float = 10.0) -> int:
        """The approval id the first waiter waits on, once one does; fails after ``timeout``."""
        with self._waiting:
            if not self._waiting.wait_for(lambda: self.approval_ids, timeout=timeout):
                pytest.fail(f"Nobody waited for a decision within {timeout} s.")
            return self.approval_ids[0]


@pytest.fixture
def decision_waiters(monkeypatch) -> DecisionWaiters:
    """Every wait on this process's decision channel is announced before it blocks: the row was
    read and found pending, so a decision made after ``first()`` provably arrives mid-wait."""
    from approvals.decision_channels import get_decision_channel

    channel = get_decision_channel()
    waiters = DecisionWaiters()
    real_wait = channel.wait

    def wait(approval_id: int, timeout: float) -> bool:
        waiters.entered(approval_id)
        return real_wait(approval_id, timeout)

    monkeypatch.setattr(channel, "wait", wait)
    return waiters


@pytest.fixture
def in_memory_channel_layer(request, settings) -> None:
    """Sockets and senders of this process meet in memory (channels drops its layers when the
    setting changes), unless the test asks for ``redis_channel_layer``: one test per socket goes
    through Redis, as in production."""
    if "redis_channel_layer" not in request.fixturenames:
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.fixture
def redis_channel_layer(redis_url, settings) -> None:
    """This test's sockets and senders meet through the Redis channel layer of the settings."""
    assert settings.CHANNEL_LAYERS["default"]["BACKEND"].startswith("channels_redis."), settings.CHANNEL_LAYERS
