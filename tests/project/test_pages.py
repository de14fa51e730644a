from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db


def test_home_page_links_to_admin_and_api_docs(client):
    page = client.get("/")
    assert page.status_code == 200
    assert b'href="/admin/"' in page.content
    assert b'href="/api/docs/"' in page.content


def test_openapi_schema_is_served(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    assert response.json()["info"]["title"] == "Anvia for Django"


def test_login_page_logs_a_user_in(client):
    UserFactory(username="carol")
    response = client.post("/accounts/login/", {"username": "carol", "password": PASSWORD})
    assert response.status_code == 302
    assert client.get("/").context["user"].username == "carol"


def test_seed_demo_is_idempotent(capsys):
    call_command("seed_demo")
    call_command("seed_demo")
    users = get_user_model().objects.order_by("username")
    assert [u.username for u in users] == ["admin", "alice", "bob", "reviewer"]
    assert users.get(username="reviewer").check_password("anvia-demo")
    assert "(unchanged)" in capsys.readouterr().out
