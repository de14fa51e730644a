"""Test settings: the real settings, a fast password hasher, and a test database per test run."""

import os

from anvia_project.settings import *  # noqa: F403
from anvia_project.settings import BASE_DIR, DATABASES

# PBKDF2 costs ~0.3 s a hash; the race tests create dozens of reviewers.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Two suites running at once on one machine must not share a test database. Child processes
# (the live server) inherit the suffix through the environment.
_run = os.environ.setdefault("ANVIA_TEST_RUN", str(os.getpid()))
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "var" / f"test-{_run}.sqlite3")}
else:
    DATABASES["default"]["TEST"] = {"NAME": f"test_anvia_{_run}"}
