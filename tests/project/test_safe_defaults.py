"""Production defaults fail closed (issue 9, item 7): DEBUG off unless asked for, the app's own
error pages, a secret key required, Swagger UI from local static files."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agents.services import conversation_create
from tests.factories import UserFactory

ROOT = Path(__file__).resolve().parents[2]

# Runs with the real settings module, DJANGO_DEBUG unset, on a throwaway SQLite database.
ANOTHER_CUSTOMERS_CONVERSATION = """
import django
from django.conf import settings
django.setup()
from django.core.management import call_command
from django.test import Client
from django.test.utils import setup_test_environment
call_command("migrate", verbosity=0)
setup_test_environment(debug=settings.DEBUG)  # keep DEBUG as the settings say
from agents.services import conversation_create
from tests.factories import UserFactory
alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
conversation = conversation_create(user=alice)
client = Client()
client.force_login(bob)
response = client.get(f"/chat/{conversation.pk}/")
print("DEBUG", settings.DEBUG)
print("STATUS", response.status_code)
print(response.content.decode())
"""


def settings_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "DATABASE_URL"))}
    env.update(
        DJANGO_SETTINGS_MODULE="anvia_project.settings",
        DATABASE_URL=f"sqlite:///{tmp_path / 'defaults.sqlite3'}",
        **extra,
    )
    return env


def test_with_debug_unset_another_customers_conversation_is_the_apps_404_page(tmp_path):
    env = settings_env(tmp_path, DJANGO_SECRET_KEY="a-key-for-this-test-only")

    result = subprocess.run(
        [sys.executable, "-c", ANOTHER_CUSTOMERS_CONVERSATION], cwd=ROOT, env=env, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
    page = result.stdout
    assert "DEBUG False" in page
    assert "STATUS 404" in page
    assert "<h1>Page not found</h1>" in page
    assert 'href="/static/css/anvia.css"' in page  # the base layout
    # Django's debug 404 lists the URL patterns it tried.
    assert "URLconf" not in page
    assert "chat/&lt;int:conversation_id&gt;/" not in page
    assert "DEBUG = True" not in page


def test_with_debug_unset_a_secret_key_is_required(tmp_path):
    env = settings_env(tmp_path)
    script = "import django; django.setup()"

    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)

    assert result.returncode != 0
    assert "Set DJANGO_SECRET_KEY" in result.stderr


def test_debug_is_on_only_when_asked_for(tmp_path):
    script = "from django.conf import settings; print(settings.DEBUG)"
    asked = settings_env(tmp_path, DJANGO_DEBUG="true")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=asked, capture_output=True, text=True)
    assert result.stdout.strip() == "True", result.stderr


@pytest.mark.django_db
def test_the_404_page_extends_the_layout_and_offers_the_way_back(client):
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    conversation = conversation_create(user=alice)
    client.force_login(bob)

    response = client.get(f"/chat/{conversation.pk}/")

    assert response.status_code == 404
    page = response.content.decode()
    assert "<h1>Page not found</h1>" in page
    assert 'href="/chat/"' in page
    assert "bob" in page  # the layout's header: who is signed in


@pytest.mark.django_db
def test_the_500_page_renders_without_a_request():
    from django.template import loader

    page = loader.get_template("500.html").render()

    assert "Something went wrong on our side" in page
    assert 'href="/static/css/anvia.css"' in page


@pytest.mark.django_db
def test_api_docs_load_only_local_static_files(client):
    client.force_login(UserFactory())

    page = client.get("/api/docs/").content.decode()

    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert any("swagger-ui" in source for source in sources)
    for source in sources:
        assert source.startswith("/static/"), source
    assert "cdn" not in page.lower()
    for source in sources:
        response = client.get(source)
        response.close()  # a file response: close it, as a server would
        assert response.status_code == 200, source
