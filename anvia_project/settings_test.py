"""Test settings: the real settings, a fast password hasher, and a test database per test run."""

import os

# DEBUG stays off, as in production (pytest-django would turn it off anyway); a key for the test
# run only, set before the settings read it. Child processes (live server, workers) inherit it.
os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-not-secret")

from anvia_project.settings import *  # noqa: F403
from anvia_project.settings import BASE_DIR, CELERY_BROKER_TRANSPORT_OPTIONS, CHANNEL_LAYERS, DATABASES

# PBKDF2 costs ~0.3 s a hash; the race tests create dozens of reviewers.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Two suites running at once on one machine must not share a test database. Child processes
# (the live server) inherit the suffix through the environment.
_run = os.environ.setdefault("ANVIA_TEST_RUN", str(os.getpid()))
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "var" / f"test-{_run}.sqlite3")}
else:
    DATABASES["default"]["TEST"] = {"NAME": f"test_anvia_{_run}"}

# Suites sharing one Redis must not take each other's tasks or answer each other's worker pings:
# every broker key (queues, unacked, pidbox) of this run carries its own prefix.
CELERY_BROKER_TRANSPORT_OPTIONS = {**CELERY_BROKER_TRANSPORT_OPTIONS, "global_keyprefix": f"anvia-test-{_run}:"}

# Approval ids restart with every test database: a run's decision wake-ups get keys of its own.
ANVIA_REDIS_KEY_PREFIX = f"anvia-test-{_run}"

# Redis pub/sub ignores the database number: without a prefix of its own, a run would hear another
# run's reviewer broadcasts. Subprocesses (live server, workers) share the prefix via ANVIA_TEST_RUN.
if CHANNEL_LAYERS["default"]["BACKEND"].startswith("channels_redis."):
    CHANNEL_LAYERS = {
        "default": {
            **CHANNEL_LAYERS["default"],
            "CONFIG": {**CHANNEL_LAYERS["default"]["CONFIG"], "prefix": f"anvia-test-{_run}"},
        }
    }

# Per process, and cleared before every test (tests/conftest.py): rate-limit counts must not leak
# from one test into the next, nor between suites sharing a Redis.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Static files straight from the app folders, as they are: the suite never runs collectstatic.
WHITENOISE_AUTOREFRESH = True

# The suite's offline answers arrive at once; the streaming tests slow the model down themselves.
ANVIA_OFFLINE_WORD_DELAY_SECONDS = 0.0
