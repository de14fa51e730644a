"""The secret key ``make run`` uses when ``DJANGO_SECRET_KEY`` is unset: made once, kept in var/.

Random per checkout and never committed (``var/`` is ignored), so sessions survive a restart and
no two machines share a key. Production sets ``DJANGO_SECRET_KEY`` itself.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def local_secret_key(path: Path) -> str:
    """The key stored at ``path``, written there (readable by its owner only) on first use."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another start wrote it first
        return path.read_text().strip()
    with os.fdopen(descriptor, "w") as file:
        file.write(key + "\n")
    return key
