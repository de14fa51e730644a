"""What Studio says when it starts, where it binds, and who it acts as."""

from __future__ import annotations

import pytest

from anvia import Agent
from anvia.studio import Studio
from anvia.studio.server import _banner, _endpoint, _port
from anvia.studio.users import acting_user_default, acting_users, studio_reviewer_ensure
from anvia.testing import ScriptedModel
from approvals.services import reviewer_can_decide
from tests.factories import UserFactory


def agent(name: str = "support") -> Agent:
    return Agent(name=name, instructions="Hi.", model=ScriptedModel(["Hi."]))


def test_studio_binds_to_loopback_by_default_and_warns_about_anything_else():
    assert Studio([agent()]).host == "127.0.0.1"
    assert _banner("127.0.0.1", 4021, True) == (
        "Anvia Studio on http://127.0.0.1:4021/ (bound to 127.0.0.1 only: other machines cannot reach it)"
    )
    exposed = _banner("0.0.0.0", 4021, False)  # noqa: S104
    assert exposed.startswith("Anvia Studio on http://0.0.0.0:4021/\nWARNING: Studio is bound to every network")
    assert "anyone who can reach it can chat as your users and approve tool calls" in exposed
    assert _endpoint("127.0.0.1", 4021) == "tcp:port=4021:interface=127.0.0.1"
    assert _endpoint("::1", 0) == r"tcp6:port=0:interface=\:\:1"


def test_studio_refuses_what_it_cannot_serve():
    with pytest.raises(ValueError, match="at least one agent"):
        Studio([])
    with pytest.raises(ValueError, match="Two agents are named 'support'"):
        Studio([agent(), agent()])
    with pytest.raises(TypeError, match="Studio takes anvia Agent objects"):
        Studio(["support"])
    with pytest.raises(SystemExit, match="from 0 to 65535"):
        _port("80a")
    with pytest.raises(SystemExit, match="from 0 to 65535"):
        _port(70000)


@pytest.mark.django_db
def test_the_studio_reviewer_may_decide_and_is_never_acted_as():
    bob = UserFactory(username="bob")
    staff = UserFactory(username="aaron", is_staff=True)
    reviewer = studio_reviewer_ensure()
    assert reviewer_can_decide(reviewer)
    assert not reviewer.has_usable_password()
    assert studio_reviewer_ensure().pk == reviewer.pk
    assert list(acting_users()) == [bob, staff]
    assert acting_user_default() == bob


@pytest.mark.django_db
def test_an_empty_database_gets_a_customer_to_act_as():
    studio_reviewer_ensure()
    assert acting_user_default() is None
    customer = acting_user_default(create=True)
    assert customer.username == "customer"
    assert not customer.is_staff
