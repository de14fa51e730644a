"""`pip install -e .` (make does it) makes the framework importable from anywhere: the README's
example runs in a directory outside the repository."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_example() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## The framework in one example", 1)[1]
    return re.search(r"^```python\n(.*?)^```", section, re.MULTILINE | re.DOTALL).group(1)


def test_the_readme_example_runs_outside_the_repository(tmp_path):
    script = tmp_path / "example.py"
    # The example leaves the reviewer to the reader; this one says yes.
    script.write_text("def my_reviewer_said_yes(call):\n    return True\n\n" + readme_example())
    env = {key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "DJANGO_SETTINGS_MODULE"}}

    done = subprocess.run(
        [sys.executable, "-I", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0, done.stderr
    assert "refunded $150.00" in done.stdout.lower()
    assert "outcome='ran'" in done.stdout
