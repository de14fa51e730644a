"""Anvia Studio: try agents locally and approve their protected tool calls in a browser.

    from anvia.studio import Studio
    from agents.support import support_agent

    Studio([support_agent]).start(port=4021)

Importing this module sets Django up unless something already has (``DJANGO_SETTINGS_MODULE``,
``anvia_project.settings`` by default) in one-process mode: decisions wake the waiting run in
memory and the channel layer is in memory, so Studio needs neither Redis nor Celery. That is why
it is imported before the agents, whose tools use the project's models.
"""

from __future__ import annotations

from anvia.studio.bootstrap import configure_django

configure_django()

from anvia.studio.server import Studio  # noqa: E402

__all__ = ["Studio"]
