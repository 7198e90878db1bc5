"""Ending the server processes the fixtures start."""

from __future__ import annotations

import signal
import subprocess


def stop_process(
    process: subprocess.Popen[bytes], timeout: float, signum: int = signal.SIGTERM
) -> None:
    """Send ``signum`` if ``process`` still runs, wait ``timeout`` s, then SIGKILL; reap it."""
    if process.poll() is not None:
        return
    process.send_signal(signum)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def catches_signal(pid: int, signum: int) -> bool:
    """True when process ``pid`` has a handler for ``signum`` (SigCgt in /proc/PID/status).

    A signal a process does not catch may end it (SIGUSR1 before the milter
    has installed its handler, for instance).
    """
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (signum - 1)))
    return False
