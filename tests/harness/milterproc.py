"""Run ``ldapdkim run`` as a real process for end-to-end tests.

The milter is started from a configuration file the test writes, on a free
loopback port or a Unix socket, and waited for by polling its socket with a
deadline.  Its log (standard error) is kept for assertions.  It runs as one
process (``Workers 1``) unless the test's lines say ``Workers``: the tests of
worker processes and of the installed package's defaults ask for them.  Its
replica database lives in the work directory unless the lines say
``StateDirectory``, so that no two tests share one (nor ``/var/lib/ldapdkim``).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType

from harness.common import (
    accepts,
    catches_signal,
    free_port,
    start_and_wait,
    stop_process,
    wait_until_ready,
)

START_TIMEOUT = 15.0
RELOAD_TIMEOUT = 10.0


class MilterProcess:
    """``ldapdkim run -c CONFIG`` in a subprocess."""

    def __init__(
        self,
        workdir: Path,
        config_lines: list[str],
        *,
        unix_socket: Path | None = None,
        env: dict[str, str] | None = None,
        program: list[str] | None = None,
    ) -> None:
        """``unix_socket``: listen there (``local:``) instead of on a free loopback port;
        ``env``: added to the environment (NOTIFY_SOCKET, say); ``program``: the
        ``ldapdkim`` to run (default: this checkout's, with the test's Python)."""
        self.env = env or {}
        self.program = program or [sys.executable, "-m", "ldapdkim"]
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        if unix_socket is not None:
            self.socket_path: Path | None = unix_socket
            self.socket = f"local:{self.socket_path}"
            self.postfix_address = f"unix:{self.socket_path}"
        else:
            self.socket_path = None
            self.port = free_port()
            self.socket = f"inet:{self.port}@127.0.0.1"
            self.postfix_address = f"inet:127.0.0.1:{self.port}"
        self.config_path = workdir / "ldapdkim.conf"
        self.log_path = workdir / "ldapdkim.log"
        self.write_config(config_lines)
        self.process: subprocess.Popen[bytes] | None = None

    def write_config(self, lines: list[str]) -> None:
        given = {line.split()[0] for line in lines if line.split()}
        defaults = [] if "Workers" in given else ["Workers 1"]
        if "StateDirectory" not in given:
            state = self.workdir / "state"
            state.mkdir(exist_ok=True)
            defaults.append(f"StateDirectory {state}")
        text = "\n".join([f"Socket {self.socket}", "Syslog no", *defaults, *lines]) + "\n"
        self.config_path.write_text(text)

    def start(self, *, wait: bool = True) -> None:
        """Start ``ldapdkim run``; unless ``wait`` is False, return once its socket answers."""
        self.process = start_and_wait(
            [*self.program, "run", "-c", str(self.config_path)],
            name="ldapdkim run",
            until=f"listening on {self.socket}",
            ready=(lambda: accepts(self.socket)) if wait else (lambda: True),
            timeout=START_TIMEOUT,
            log_path=self.log_path,
            log=self.log,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
        )

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stats_line(self, timeout: float = 10.0) -> str | None:
        """The milter's next ``stats:`` line (its counters), asked for with SIGUSR1.

        None if it does not catch SIGUSR1 yet (the signal would end it) or
        exits or logs no such line within ``timeout`` seconds.
        """
        assert self.process is not None
        if not catches_signal(self.process.pid, signal.SIGUSR1):
            return None
        before = self.log().count("stats: ")
        self.signal(signal.SIGUSR1)
        after: list[str] = []

        def logged() -> bool:
            after[:] = self.log().split("stats: ")[before + 1 :]
            return bool(after)

        with contextlib.suppress(TimeoutError):
            wait_until_ready(
                "ldapdkim run",
                "logging its stats after SIGUSR1",
                logged,
                timeout=timeout,
                process=self.process,
                error=TimeoutError,
            )
        return after[0].splitlines()[0] if after else None

    def stats(self, timeout: float = 10.0) -> dict[str, str] | None:
        """:meth:`stats_line` as ``{name: value}``."""
        line = self.stats_line(timeout)
        return None if line is None else dict(re.findall(r"(\w+)=(\S+)", line))

    def reload(self, lines: list[str]) -> None:
        """Write a new configuration and send SIGHUP; wait until the log says what happened.

        Raises:
            AssertionError: the milter exited, or logged nothing about a configuration
                within :data:`RELOAD_TIMEOUT` seconds (it did not take the signal).
        """
        before = self.log().count("configuration")
        self.write_config(lines)
        self.signal(signal.SIGHUP)
        wait_until_ready(
            "ldapdkim run",
            "logging a configuration line after SIGHUP",
            lambda: self.log().count("configuration") > before,
            timeout=RELOAD_TIMEOUT,
            process=self.process,
            log=lambda: self.log()[-2000:],
            error=AssertionError,
        )

    def stop(self) -> None:
        if self.process is None:
            return
        stop_process(self.process, 15)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> MilterProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
