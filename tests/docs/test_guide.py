"""Every python block of docs/human-in-the-loop.md runs, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "human-in-the-loop.md"
BLOCK = re.compile(r"^```python( studio)?\n(.*?)^```", re.MULTILINE | re.DOTALL)


def guide_blocks() -> list[tuple[bool, str]]:
    return [(bool(studio), code) for studio, code in BLOCK.findall(GUIDE.read_text())]


@pytest.mark.django_db(transaction=True)
def test_every_python_block_of_the_guide_runs():
    namespace: dict = {"__name__": "guide"}
    ran = 0
    for is_studio, code in guide_blocks():
        if is_studio:
            continue
        exec(compile(code, str(GUIDE), "exec"), namespace)  # noqa: S102 - our own documentation
        ran += 1
    connection.close()
    assert ran >= 7


def test_the_studio_block_is_the_studio_script():
    studio_blocks = [code for is_studio, code in guide_blocks() if is_studio]
    assert len(studio_blocks) == 1
    script = (ROOT / "scripts" / "studio.py").read_text()
    assert studio_blocks[0].strip() in script
