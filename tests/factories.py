"""factory_boy factories shared by the suite."""

from __future__ import annotations

from datetime import timedelta

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.utils import timezone

from approvals.models import Approval
from approvals.services import args_hash

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
