"""``make studio``: the support agent in Anvia Studio, at http://127.0.0.1:4021/.

Studio is framework code and knows nothing of Django; the support agent's tools use the shop's
models, so this script sets Django up first (one process: decisions wake the waiting run in
memory, no Redis, no Celery) and brings the database up to date. The last lines are the Studio
part a developer writes. ``ANVIA_STUDIO_PORT`` moves it to another port (0: any free one; the
first line printed says which).
"""

# ruff: noqa: E402

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "anvia_project.settings")
os.environ.setdefault("DJANGO_DEBUG", "true")  # a local tool on 127.0.0.1
os.environ["ANVIA_DECISION_CHANNEL"] = "memory"  # Studio's runs and its reviewer share this process
os.environ.setdefault("ANVIA_CHANNEL_LAYER", "memory")
os.environ["ANVIA_REVIEWER_NOTIFICATIONS"] = "false"  # no Celery here; the reviewer is at the page

import django

django.setup()

from django.core.management import call_command

call_command("migrate", interactive=False, verbosity=0)

from agents.support import support_agent
from anvia.studio import Studio
from approvals.studio_store import ApprovalsStore

Studio([support_agent], store=ApprovalsStore()).start(port=4021)
