from __future__ import annotations

import subprocess
import sys


def test_importing_anvia_core_loads_no_django():
    script = (
        "import sys, anvia.core, anvia.testing; print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
