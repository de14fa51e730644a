"""``make studio``: the support agent in Anvia Studio, at http://127.0.0.1:4021/.

The three lines at the bottom are the whole Studio script a developer writes; the rest only puts
the project on the import path, because ``python scripts/studio.py`` starts in ``scripts/``.
``anvia.studio`` comes first: importing it sets Django up, which the agent's tools need.
``ANVIA_STUDIO_PORT`` moves it to another port (0: any free one; the first line printed says which).
"""

# ruff: noqa: I001

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from anvia.studio import Studio
from agents.support import support_agent

Studio([support_agent]).start(port=4021)
