"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os

import pytest


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
