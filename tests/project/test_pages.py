from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from tests.factories import PASSWORD, ReviewerFactory, UserFactory

pytestmark = pytest.mark.django_db


def links(page) -> set[str]:
    return set(re.findall(r'href="([^"]+)"', page.content.decode().split("<main>", 1)[1]))


def test_a_customer_s_home_page_lists_only_what_they_may_use(client):
    client.force_login(UserFactory(username="carol"))
    page = client.get("/")
    assert page.status_code == 200
    assert links(page) == {"/chat/"}
    assert b"Review queue" not in page.content
    assert b"Django admin" not in page.content


def test_a_reviewer_s_home_page_leads_to_the_queue_admin_and_docs(client):
    client.force_login(ReviewerFactory(username="rita"))
    page = client.get("/")
    assert {"/review/", "/review/settings/", "/chat/", "/admin/", "/api/docs/"} <= links(page)


def test_a_visitor_is_asked_to_log_in(client):
    page = client.get("/")
    assert links(page) == {"/accounts/login/"}


@pytest.mark.parametrize(("factory", "lands_on"), [(UserFactory, "/chat/"), (ReviewerFactory, "/review/")])
def test_signing_in_lands_where_the_user_works(client, factory, lands_on):
    factory(username="someone")
    response = client.post("/accounts/login/", {"username": "someone", "password": PASSWORD})
    assert response["Location"] == lands_on


def test_a_next_link_wins_over_the_landing_page(client):
    ReviewerFactory(username="rita")
    response = client.post("/accounts/login/?next=/review/7/", {"username": "rita", "password": PASSWORD})
    assert response["Location"] == "/review/7/"


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
