"""The people in Studio: the local reviewer who decides, and the users a developer chats as."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import transaction
from django.db.models import QuerySet

REVIEWER_USERNAME = "studio"
FALLBACK_CUSTOMER_USERNAME = "customer"


@transaction.atomic
def studio_reviewer_ensure():
    """The ``studio`` user every Studio decision is attributed to: staff, allowed to decide,
    and unable to log in to the app (it has no password)."""
    User = get_user_model()
    reviewer, created = User.objects.get_or_create(
        username=REVIEWER_USERNAME, defaults={"is_staff": True, "is_active": True}
    )
    if created:
        reviewer.set_unusable_password()
        reviewer.save(update_fields=["password"])
    elif not (reviewer.is_staff and reviewer.is_active):
        reviewer.is_staff = reviewer.is_active = True
        reviewer.save(update_fields=["is_staff", "is_active"])
    reviewer.user_permissions.add(
        Permission.objects.get(content_type__app_label="approvals", codename="decide_approval")
    )
    # A fresh instance: the one above may have cached its permissions before the grant.
    return User.objects.get(pk=reviewer.pk)


def acting_users() -> QuerySet:
    """Who a developer can chat as: active users but the reviewer, customers first.

    The reviewer is left out because nobody may approve their own request.
    """
    User = get_user_model()
    return (
        User.objects.filter(is_active=True)
        .exclude(username=REVIEWER_USERNAME)
        .order_by("is_staff", "is_superuser", User.USERNAME_FIELD)
    )


def acting_user_default(*, create: bool = False):
    """The first customer (a user who is not staff), else the first user. With ``create`` and
    nobody to act as, a plain ``customer`` user is made so that chats work on an empty database."""
    user = acting_users().first()
    if user is None and create:
        User = get_user_model()
        user, created = User.objects.get_or_create(username=FALLBACK_CUSTOMER_USERNAME)
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
    return user
