"""``manage.py seed_demo``: the demo logins (and, as the shop grows, its data). Safe to run again."""

from __future__ import annotations

import os

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management.base import BaseCommand

from shop.models import Order

DEMO_USERS = [
    # username, is_staff, is_superuser, can decide approvals
    ("admin", True, True, True),
    ("reviewer", True, False, True),
    ("alice", False, False, False),
    ("bob", False, False, False),
]

DEMO_ORDERS = [
    # number, customer, description, total, status
    ("A-1001", "alice", "Espresso machine", "249.00", Order.Status.DELIVERED),
    ("A-1002", "alice", "Coffee grinder", "80.00", Order.Status.SHIPPED),
    ("A-1003", "alice", "Milk frother", "45.00", Order.Status.PLACED),
    ("A-1004", "alice", "Roaster", "900.00", Order.Status.DELIVERED),  # refunds over $500 need two reviewers
    ("A-1005", "alice", "Coffee subscription, a year", "400.00", Order.Status.DELIVERED),  # to show a grant
    ("B-2001", "bob", "Standing desk", "520.00", Order.Status.PLACED),
    ("B-2002", "bob", "Desk lamp", "60.00", Order.Status.DELIVERED),
]


class Command(BaseCommand):
    help = "Create the demo users and orders idempotently and print the logins."

    def handle(self, *args, **options):
        password = os.environ.get("DEMO_PASSWORD", "anvia-demo")
        User = get_user_model()
        decide = Permission.objects.filter(content_type__app_label="approvals", codename="decide_approval").first()
        for username, is_staff, is_superuser, can_decide in DEMO_USERS:
            user, created = User.objects.get_or_create(
                username=username, defaults={"is_staff": is_staff, "is_superuser": is_superuser}
            )
            if created:
                user.set_password(password)
                user.save()
            if can_decide and decide is not None:
                user.user_permissions.add(decide)
            state = "created" if created else "exists"
            self.stdout.write(f"  {username:<9} {state:<8} password: {password if created else '(unchanged)'}")

        for number, customer, description, total, status in DEMO_ORDERS:
            Order.objects.get_or_create(
                number=number,
                defaults={
                    "customer": User.objects.get(username=customer),
                    "description": description,
                    "total": total,
                    "status": status,
                },
            )
        self.stdout.write(f"  orders: {', '.join(n for n, *_ in DEMO_ORDERS)}")
