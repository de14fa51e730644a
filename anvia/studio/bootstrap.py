"""Setting Django up for Studio: one process, no Redis, an up-to-date database."""

from __future__ import annotations

import os

DEFAULT_SETTINGS_MODULE = "anvia_project.settings"


def configure_django() -> bool:
    """Set Django up for a single Studio process, unless it is set up already.

    The decision channel is forced to ``memory``: Studio's runs and its reviewer share one
    process, and a Redis channel would need a Redis server. The channel layer only defaults to
    ``memory``, so a developer who points it at the app's Redis also sees Studio's approvals live
    in the app's reviewer queue. Returns ``True`` if this call set Django up.
    """
    from django.apps import apps

    if apps.ready:
        return False
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", DEFAULT_SETTINGS_MODULE)
    os.environ["ANVIA_DECISION_CHANNEL"] = "memory"
    os.environ.setdefault("ANVIA_CHANNEL_LAYER", "memory")
    django.setup()
    return True


def database_migrate() -> list[str]:
    """Apply the migrations the database lacks; the names of those applied."""
    from django.core.management import call_command
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        call_command("migrate", interactive=False, verbosity=0)
    return [f"{migration.app_label}.{migration.name}" for migration, _ in plan]
