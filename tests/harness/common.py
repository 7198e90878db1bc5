"""What the harness's servers, the tests and the benchmarks share.

The environment (CI or not, where programs are), free ports, log tails,
waiting with a deadline, and the life of a server process: start it, wait
until it is ready (:func:`start_and_wait`), stop it.  Every readiness loop of
the harness is :func:`wait_until_ready` with its own ``ready`` check.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

import pytest

from harness import milterproto

SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")

# -- environment ------------------------------------------------------------------------


def in_ci() -> bool:
    """True when the ``CI`` environment variable is non-empty (``.ci/run`` sets it)."""
    return bool(os.environ.get("CI"))


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the current test with *reason*, or fail it when the CI variable is set.

    A missing server or tool is a broken environment in CI, not a reason to pass.
    """
    if in_ci():
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def find_binary(name: str) -> str | None:
    """Return the path of program *name* on PATH or in the sbin directories."""
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN_DIRS))


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = 30) -> str:
    """Return the last *lines* lines of the log file at *path* (or a note)."""
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        return f"(cannot read {path}: {err.strerror})"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else f"({path} is empty)"


def accepts(spec: str) -> bool:
    """Whether something listens on the milter socket ``spec`` now (``inet:PORT@HOST`` or
    ``unix:PATH``; one connection, closed at once)."""
    address = milterproto.MilterAddress.parse(spec)
    try:
        with socket.socket(address.family, socket.SOCK_STREAM) as probe:
            probe.settimeout(0.5)
            probe.connect(address.sockaddr)
    except OSError:
        return False
    return True


# -- waiting ----------------------------------------------------------------------------


def wait_for(
    what: str,
    check: Callable[[], object],
    timeout: float = 20.0,
    *,
    interval: float = 0.02,
    ignoring: tuple[type[Exception], ...] = (),
) -> float:
    """Seconds until ``check()`` holds; the test fails, naming ``what``, after ``timeout``.

    ``ignoring``: exceptions ``check`` may raise while the awaited thing is not there yet.
    """
    started = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - started
        except ignoring:
            pass
        if time.monotonic() - started > timeout:
            pytest.fail(f"{what}: not within {timeout:g} s")
        time.sleep(interval)


LogSource = Path | Callable[[], str] | None
"""Where to find what a process said, for an error message: its log file (the tail is
quoted), a function returning the text to quote, or nothing."""


def _quote(log: LogSource) -> str:
    if log is None:
        return ""
    if isinstance(log, Path):
        return f"; last lines of {log}:\n{log_tail(log)}"
    return f":\n{log()}"


def wait_until_ready(
    name: str,
    until: str,
    ready: Callable[[], bool],
    *,
    timeout: float,
    process: subprocess.Popen[bytes] | None = None,
    log: LogSource = None,
    error: type[Exception] = RuntimeError,
    interval: float = 0.002,
    max_interval: float = 0.05,
) -> float:
    """Poll ``ready()`` until it returns True; return the seconds that took.

    ``name`` is the program and ``until`` the awaited state, as in "slapd ... was not
    *answering an anonymous bind on ldap://...*".  The pause between polls doubles
    from ``interval`` up to ``max_interval``.  ``ready`` may raise ``error`` itself when
    it sees that waiting longer is pointless.

    Raises:
        error: *process* exited first, or *timeout* seconds passed; the message
            quotes *log*.
    """
    started = time.monotonic()
    deadline = started + timeout
    delay = interval
    while True:
        status = None if process is None else process.poll()
        if status is not None:
            raise error(f"{name} exited with {status} before {until}{_quote(log)}")
        if ready():
            return time.monotonic() - started
        if time.monotonic() >= deadline:
            pid = "" if process is None else f" (pid {process.pid})"
            raise error(f"{name}{pid} was not {until} within {timeout:g} s{_quote(log)}")
        time.sleep(delay)
        delay = min(delay * 2, max_interval)


def start_and_wait(
    argv: Sequence[str],
    *,
    name: str,
    until: str,
    ready: Callable[[], bool],
    timeout: float,
    log_path: Path | None = None,
    log: LogSource = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    error: type[Exception] = RuntimeError,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` and return it once ``ready()`` holds (see :func:`wait_until_ready`).

    Its standard output and error are appended to ``log_path`` (discarded without one);
    ``log`` says what to quote on failure (default: the tail of ``log_path``).  A process
    that does not get ready is killed before the error is raised.
    """
    with open(log_path, "ab") if log_path is not None else open(os.devnull, "wb") as out:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            cwd=cwd,
        )
    try:
        wait_until_ready(
            name,
            until,
            ready,
            timeout=timeout,
            process=process,
            log=log if log is not None else log_path,
            error=error,
        )
    except BaseException:
        stop_process(process, 5)
        raise
    return process


# -- processes --------------------------------------------------------------------------


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
