"""``anvia.studio`` is framework code: importing it pulls in no Django and nothing of this project."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT_PACKAGES = ("django", "agents", "approvals", "shop", "anvia_project")


def test_importing_anvia_studio_imports_no_django_and_nothing_of_the_project():
    script = (
        "import json, sys\n"
        "import anvia.studio\n"
        "from anvia.studio import Studio, MemoryStore\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {PROJECT_PACKAGES!r})))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd="/", env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
