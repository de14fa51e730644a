"""``make run`` keeps its processes up: supervisord, run from the Procfile, restarts one that dies.

A real supervisord with the configuration ``scripts/run.py`` writes, on a Procfile of one
long sleeper (the real one would cost a migrate and four Django processes): SIGKILL the process,
supervisord logs it and starts it again; SIGINT (Ctrl-C) stops supervisord and its processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_a_process_that_dies_is_restarted_and_logged(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import run

    procfile = tmp_path / "Procfile"
    procfile.write_text(f"""sleeper: {sys.executable} -c "import sys, time; time.sleep(int(sys.argv[1]))" $NAP\n""")
    config = tmp_path / "supervisord.conf"
    config.write_text(run.supervisord_config(procfile, tmp_path))
    log = tmp_path / "terminal.log"

    def sleeper_pid() -> int:
        answer = subprocess.run(
            [BIN / "supervisorctl", "-c", config, "pid", "sleeper"], capture_output=True, text=True, check=False
        )
        return int(answer.stdout.strip()) if answer.stdout.strip().isdigit() else 0

    with log.open("wb") as terminal:
        supervisord = subprocess.Popen(
            [BIN / "supervisord", "-c", config],
            env={**os.environ, "NAP": "600"},  # $NAP in the Procfile is the environment's
            stdout=terminal,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        first = wait_until(sleeper_pid, timeout=15, message="the sleeper never started")
        os.kill(first, signal.SIGKILL)
        second = wait_until(
            lambda: (pid := sleeper_pid()) not in (0, first) and pid,
            timeout=15,
            message="the killed process was not started again",
            describe=log.read_text,
        )
        assert supervisord.poll() is None, "supervisord went on"
        text = log.read_text()
        assert "exited: sleeper (terminated by SIGKILL; not expected)" in text
        assert text.count("spawned: 'sleeper'") == 2

        supervisord.send_signal(signal.SIGINT)  # Ctrl-C
        assert supervisord.wait(timeout=15) == 0
        wait_until(lambda: not os.path.exists(f"/proc/{second}"), timeout=5, message="the process outlived Ctrl-C")
    finally:
        if supervisord.poll() is None:
            supervisord.kill()
            supervisord.wait()
