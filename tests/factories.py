"""factory_boy factories, one per model: users and reviewers, the shop's orders and refunds, the
agents' conversations, messages, runs and run events, and approvals with their events."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.utils import timezone

from agents.models import AgentRun, Conversation, Message, RunEvent
from approvals.models import Approval, ApprovalEvent
from approvals.services import args_hash
from shop.models import Order, Refund

PASSWORD = "a-long-test-password"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password(PASSWORD)


class ReviewerFactory(UserFactory):
    """Staff with the ``approvals.decide_approval`` permission."""

    username = factory.Sequence(lambda n: f"reviewer{n}")
    is_staff = True

    @factory.post_generation
    def can_decide(self, create, extracted, **kwargs):
        if create and extracted is not False:
            self.user_permissions.add(Permission.objects.get(codename="decide_approval"))


class AdminFactory(UserFactory):
    username = factory.Sequence(lambda n: f"admin{n}")
    is_staff = True
    is_superuser = True


class OrderFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Order

    number = factory.Sequence(lambda n: f"T-{n:04d}")
    customer = factory.SubFactory(UserFactory)
    description = "Espresso machine"
    total = Decimal("249.00")


class RefundFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Refund

    order = factory.SubFactory(OrderFactory)
    amount = Decimal("40.00")
    idempotency_key = factory.Sequence(lambda n: f"run{n}:call_{n}")


class ConversationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Conversation

    user = factory.SubFactory(UserFactory)


class AgentRunFactory(factory.django.DjangoModelFactory):
    """A run of the support agent in a conversation of its customer's."""

    class Meta:
        model = AgentRun

    user = factory.SubFactory(UserFactory)
    conversation = factory.SubFactory(ConversationFactory, user=factory.SelfAttribute("..user"))
    agent_name = "support"


class MessageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Message

    conversation = factory.SubFactory(ConversationFactory)
    role = Message.Role.USER
    content = "where is my order A-1001?"


class RunEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RunEvent

    run = factory.SubFactory(AgentRunFactory)
    type = "step"


class ApprovalFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Approval

    run_id = factory.Sequence(lambda n: f"run{n}")
    call_id = factory.Sequence(lambda n: f"call_{n}")
    agent_name = "support"
    requested_by = factory.SubFactory(UserFactory)
    tool_name = "refund_order"
    args = factory.LazyFunction(lambda: {"amount": 150.0, "order_id": "A-1001"})
    args_hash = factory.LazyAttribute(lambda o: args_hash(o.args))
    input_schema = factory.LazyFunction(
        lambda: {
            "type": "object",
            "properties": {
                "order_id": {"type": "string"},
                "amount": {"type": "number", "exclusiveMinimum": 0},
            },
            "required": ["order_id", "amount"],
        }
    )
    reason = factory.LazyAttribute(lambda o: f"Review refund of ${o.args.get('amount')} for {o.args.get('order_id')}.")
    reject_message = "Refund was not approved."
    expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(hours=24))


class ApprovalEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ApprovalEvent

    approval = factory.SubFactory(ApprovalFactory)
    kind = ApprovalEvent.Kind.REQUESTED
