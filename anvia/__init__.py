"""Anvia: agents whose side-effect tools wait for a person's approval.

``from anvia import Agent, Approval, create_tool, create_hook`` is the public API; it lives in
``anvia.core``, which imports no Django. ``anvia.testing`` helps test agents offline and
``anvia.studio`` is the local approval UI.
"""

from anvia.core import *  # noqa: F403
from anvia.core import __all__  # noqa: F401
