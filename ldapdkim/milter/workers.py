"""``Workers N``: several milter processes on one socket, kept running by a supervisor.

One Python process serves mail on about one core (the interpreter lock);
libmilter's socket can be shared.  So the supervisor opens ``Socket`` once,
before any thread exists, and forks the workers; each builds its own
runtime (directory view, caches) and runs libmilter on the inherited socket,
exactly as a single milter process does.  The supervisor:

* replaces a worker that dies (a session it had in flight ends in the MTA's
  ``milter_default_action``), and gives up when workers keep dying
  (:data:`RESPAWN_LIMIT` within :data:`RESPAWN_WINDOW` seconds);
* passes SIGHUP (reload) and SIGUSR1 (counters) on to every worker, and
  logs the counters of all workers added up (each worker logs its own as
  well); on SIGTERM or SIGINT it stops them all and waits for them;
* tells systemd READY=1 once every worker has its directory view (a pipe
  carries each worker's word; workers do not speak to systemd themselves).

Each worker keeps its own copy of the directory replica today.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import time
from collections import deque
from collections.abc import Callable
from types import FrameType

from ldapdkim.config.settings import Settings
from ldapdkim.errors import LdapDkimError

log = logging.getLogger(__name__)

RESPAWN_LIMIT = 5
RESPAWN_WINDOW = 10.0
"""A worker that dies more than RESPAWN_LIMIT times in this many seconds is a fault."""
STOP_WAIT = 40.0
"""Seconds the workers get to finish their sessions after SIGTERM (their own grace: 30 s)."""
CONFIG_ERROR = 2
"""A worker that exits with this status could not start: restarting would not help."""


class Supervisor:
    """The parent of the worker processes."""

    def __init__(
        self,
        settings: Settings,
        serve: Callable[[Callable[[str], None], Callable[[str], None]], int],
        notify: Callable[..., None],
    ) -> None:
        """``serve(ready, stats)`` runs one worker until it stops (its exit status),
        calling ``ready(status)`` once its directory view is loaded and ``stats(line)``
        with each counters line; ``notify(*states)`` speaks to systemd."""
        self.settings = settings
        self.serve = serve
        self.notify = notify
        self.count = settings.workers
        self.workers: dict[int, int] = {}
        """pid -> worker number."""
        self._deaths: deque[float] = deque()
        self._pending: list[int] = []
        self._ready_read, self._ready_write = os.pipe()
        self._ready = 0
        self._stats_read, self._stats_write = os.pipe()
        self._stats_buffer = b""
        self._stats_lines: list[str] = []
        self._stats_due = 0.0
        """time.monotonic() by which the asked workers' counters are logged, 0: none asked."""

    def run(self) -> int:
        settings = self.settings
        if settings.pid_file is not None:
            settings.pid_file.write_text(f"{os.getpid()}\n")
        for signum in (signal.SIGHUP, signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        self.notify("STATUS=starting workers")
        try:
            for number in range(self.count):
                self._spawn(number)
            log.info("supervising %d workers on %s", self.count, settings.socket)
            return self._loop()
        finally:
            if settings.pid_file is not None:
                with contextlib.suppress(OSError):
                    settings.pid_file.unlink(missing_ok=True)

    def _spawn(self, number: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            status = 1
            try:
                os.close(self._ready_read)
                os.close(self._stats_read)
                os.environ.pop("NOTIFY_SOCKET", None)  # the supervisor speaks to systemd
                for signum in (signal.SIGHUP, signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
                    signal.signal(signum, signal.SIG_DFL)
                status = self.serve(self._tell_ready, self._tell_stats)
            except LdapDkimError as err:
                log.error("worker %d cannot start: %s", number, err)
                status = CONFIG_ERROR
            except BaseException:
                log.exception("worker %d failed", number)
            finally:
                logging.shutdown()
                os._exit(status)
        self.workers[pid] = number
        log.info("worker %d started (pid %d)", number, pid)

    def _tell_ready(self, status: str) -> None:
        os.write(self._ready_write, b"r")

    def _tell_stats(self, line: str) -> None:
        """In a worker: pass its counters line to the supervisor (one short write)."""
        os.write(self._stats_write, line.encode()[:4000] + b"\n")

    def _loop(self) -> int:
        tell = self.notify
        announced = False
        while self.workers:
            readable, _, _ = select.select([self._ready_read, self._stats_read], [], [], 0.2)
            if self._ready_read in readable:
                self._ready += len(os.read(self._ready_read, 64))
            if self._stats_read in readable:
                self._take_stats(os.read(self._stats_read, 65536))
            self._log_stats()
            if not announced and self._ready >= self.count:
                tell("READY=1", f"STATUS={self.count} workers serving")
                announced = True
            for signum in self._take_signals():
                if signum in (signal.SIGTERM, signal.SIGINT):
                    tell("STOPPING=1")
                    return self._stop_all(signum)
                if signum == signal.SIGUSR1:
                    self._stats_lines, self._stats_due = [], time.monotonic() + 2.0
                for pid in self.workers:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signum)
            status = self._reap()
            if status is not None:
                return status
        return 0

    def _take_stats(self, data: bytes) -> None:
        self._stats_buffer += data
        *lines, self._stats_buffer = self._stats_buffer.split(b"\n")
        self._stats_lines += [line.decode("utf-8", "replace") for line in lines]

    def _log_stats(self) -> None:
        """Once every worker answered (or 2 s passed), log their counters added up."""
        if not self._stats_due:
            return
        if len(self._stats_lines) < len(self.workers) and time.monotonic() < self._stats_due:
            return
        log.info(
            "stats (%d of %d workers): %s",
            len(self._stats_lines),
            len(self.workers),
            add_up(self._stats_lines),
        )
        self._stats_lines, self._stats_due = [], 0.0

    def _reap(self) -> int | None:
        """Replace dead workers; a status when the supervisor must give up."""
        while self.workers:
            try:
                pid, code = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return 1
            if pid == 0:
                return None
            number = self.workers.pop(pid, None)
            if number is None:
                continue
            exit_status = os.waitstatus_to_exitcode(code)
            if exit_status == CONFIG_ERROR:
                log.error("worker %d could not start; stopping the others", number)
                self._stop_all(signal.SIGTERM)
                return CONFIG_ERROR
            how = f"signal {-exit_status}" if exit_status < 0 else f"status {exit_status}"
            now = time.monotonic()
            self._deaths.append(now)
            while self._deaths and now - self._deaths[0] > RESPAWN_WINDOW:
                self._deaths.popleft()
            if len(self._deaths) > RESPAWN_LIMIT:
                log.error(
                    "workers died %d times in %.0f s (last: worker %d, %s); giving up",
                    len(self._deaths),
                    RESPAWN_WINDOW,
                    number,
                    how,
                )
                self._stop_all(signal.SIGTERM)
                return 1
            log.error("worker %d (pid %d) ended with %s; starting another", number, pid, how)
            self._spawn(number)
        return None

    def _stop_all(self, signum: int) -> int:
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT
        while self.workers and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.05)
                continue
            self.workers.pop(pid, None)
        for pid in list(self.workers):
            log.error("worker pid %d did not stop within %.0f s; killing it", pid, STOP_WAIT)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        log.info("stopped")
        return 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._pending.append(signum)

    def _take_signals(self) -> list[int]:
        taken, self._pending = self._pending, []
        return taken


def add_up(lines: list[str]) -> str:
    """The workers' ``key=value`` counters lines as one: numbers added, in first-seen order.

    The replica's fields describe each worker's own copy of the directory
    (its size, mode, age) and are left out, as is anything not a whole number.
    """
    totals: dict[str, int] = {}
    for line in lines:
        for field in line.split():
            key, sep, value = field.partition("=")
            if sep and value.isdigit() and not key.startswith(("replica_", "directory_")):
                totals[key] = totals.get(key, 0) + int(value)
    return " ".join(f"{key}={value}" for key, value in totals.items())
