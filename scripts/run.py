"""``make run``: migrate, seed the demo, then serve web + websockets, a worker, beat and Flower.

Uses ``DATABASE_URL`` / ``REDIS_URL`` when set; otherwise SQLite and an embedded Redis.
Ctrl-C stops every process.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

from local_secret_key import local_secret_key

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def main() -> int:
    os.chdir(ROOT)
    (ROOT / "var").mkdir(exist_ok=True)
    # DEBUG is off unless DJANGO_DEBUG=true, and then Django needs a key: one made for this checkout.
    os.environ.setdefault("DJANGO_SECRET_KEY", local_secret_key(ROOT / "var" / "secret_key"))
    # The Procfile's daphne and celery are the ones installed beside this Python (.venv/bin).
    os.environ["PATH"] = os.pathsep.join([str(Path(PYTHON).parent), os.environ.get("PATH", "")])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "anvia_project.settings")
    os.environ.setdefault("WEB_PORT", "8000")
    os.environ.setdefault("FLOWER_PORT", "5555")
    flower_password = secrets.token_urlsafe(9)
    os.environ.setdefault("FLOWER_BASIC_AUTH", f"ops:{flower_password}")
    subprocess.check_call([PYTHON, "manage.py", "migrate", "--no-input", "-v", "0"])
    subprocess.check_call([PYTHON, "manage.py", "collectstatic", "--no-input", "-v", "0"])
    subprocess.check_call([PYTHON, "manage.py", "seed_demo"])
    web = f"http://127.0.0.1:{os.environ['WEB_PORT']}"
    print(
        f"\n  Anvia is starting:\n"
        f"    app            {web}/\n"
        f"    customer chat  {web}/chat/        (alice / bob)\n"
        f"    review queue   {web}/review/      (reviewer)\n"
        f"    Django admin   {web}/admin/       (admin, reviewer)\n"
        f"    API docs       {web}/api/docs/\n"
        f"    Flower         http://127.0.0.1:{os.environ['FLOWER_PORT']}/  "
        f"(login {os.environ['FLOWER_BASIC_AUTH']})\n"
        f"  Ctrl-C stops everything.\n",
        flush=True,
    )
    honcho = subprocess.Popen([PYTHON, "-m", "honcho", "-f", "Procfile", "start"])
    # Ctrl-C reaches the whole foreground group: honcho stops the processes; wait for it, then
    # (in __main__) stop the embedded Redis last.
    signal.signal(signal.SIGINT, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: honcho.terminate())
    return honcho.wait()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "scripts"))
    from embedded_redis import embedded_redis

    if os.environ.get("REDIS_URL"):
        sys.exit(main())
    with embedded_redis(port=int(os.environ.get("EMBEDDED_REDIS_PORT", "0")) or None) as url:
        os.environ["REDIS_URL"] = url
        print(f"REDIS_URL is unset: started an embedded Redis at {url}", flush=True)
        sys.exit(main())
