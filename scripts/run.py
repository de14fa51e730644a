"""``make run``: migrate, seed the demo, then serve web + websockets, a worker, beat and Flower.

Uses ``DATABASE_URL`` / ``REDIS_URL`` when set; otherwise SQLite and an embedded Redis.

The processes are the Procfile's, run by supervisord (not honcho, which stops every process when
one exits): a process that dies is restarted, and supervisord logs it ("exited: worker (terminated
by SIGKILL; not expected)", then "spawned: 'worker'"). Ctrl-C stops every process, then Redis.
While it runs: ``.venv/bin/supervisorctl -c var/supervisord.conf status`` (or ``restart worker``).
"""

from __future__ import annotations

import getpass
import os
import re
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
    config = ROOT / "var" / "supervisord.conf"
    config.unlink(missing_ok=True)
    # Owner-only: it holds the password of supervisord's control socket.
    with os.fdopen(os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(supervisord_config(ROOT / "Procfile", ROOT / "var"))
    supervisord = subprocess.Popen([str(Path(PYTHON).parent / "supervisord"), "-c", str(config)])
    # Ctrl-C reaches the whole foreground group: supervisord stops the processes (each runs in a
    # process group of its own); wait for it, then (in __main__) stop the embedded Redis last.
    signal.signal(signal.SIGINT, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: supervisord.terminate())
    return supervisord.wait()


def supervisord_config(procfile: Path, var: Path) -> str:
    """A supervisord configuration running each ``name: command`` line of the Procfile."""
    control_password = secrets.token_urlsafe(16)  # for supervisorctl, which reads it from this file
    sections = [
        "[supervisord]",
        "nodaemon = true",  # in the foreground, its own log (starts, exits, restarts) on the terminal
        f"logfile = {var / 'supervisord.log'}",
        "logfile_maxbytes = 5MB",
        f"pidfile = {var / 'supervisord.pid'}",
        f"childlogdir = {var}",
        f"user = {getpass.getuser()}",  # the current user: nothing to drop, and no warning as root
        "",
        "[unix_http_server]",
        f"file = {var / 'supervisor.sock'}",
        "chmod = 0700",
        "username = anvia",
        f"password = {control_password}",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl = unix://{var / 'supervisor.sock'}",
        "username = anvia",
        f"password = {control_password}",
    ]
    for line in procfile.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, command = (part.strip() for part in line.split(":", 1))
        # $NAME in the Procfile is the environment's NAME: supervisord spells it %(ENV_NAME)s.
        command = re.sub(r"\$(\w+)", r"%(ENV_\1)s", command.replace("%", "%%"))
        sections += [
            "",
            f"[program:{name}]",
            f"command = {command}",
            f"directory = {procfile.parent}",
            "autorestart = true",  # whatever the exit: a crashed worker comes back
            "startsecs = 3",  # up this long counts as started; a process failing sooner is retried
            "startretries = 10",
            "stopasgroup = true",
            "killasgroup = true",
            "stopwaitsecs = 10",  # then SIGKILL; a run the worker held resumes elsewhere (its lease)
            "redirect_stderr = true",
            "stdout_logfile = /dev/stdout",
            "stdout_logfile_maxbytes = 0",
        ]
    return "\n".join(sections) + "\n"


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "scripts"))
    from embedded_redis import embedded_redis

    if os.environ.get("REDIS_URL"):
        sys.exit(main())
    with embedded_redis(port=int(os.environ.get("EMBEDDED_REDIS_PORT", "0")) or None) as url:
        os.environ["REDIS_URL"] = url
        print(f"REDIS_URL is unset: started an embedded Redis at {url}", flush=True)
        sys.exit(main())
