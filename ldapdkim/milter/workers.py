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
* a worker holds SIGHUP and SIGUSR1 blocked from the fork until it has its
  handlers (:func:`signals_handled`): one that arrives while it builds its
  runtime is acted on then, instead of ending it (their default action);
* tells systemd READY=1 once every worker has its directory view (a pipe
  carries each worker's word; workers do not speak to systemd themselves).

The workers share one directory replica, the LMDB database in
``StateDirectory``; one of them writes it
(:mod:`ldapdkim.directory.replica.feed`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from ldapdkim.config.settings import Settings
from ldapdkim.errors import LdapDkimError
from ldapdkim.milter.monitor import Figures, Health, Monitor
from ldapdkim.model import DirectoryView

log = logging.getLogger(__name__)

VIEW_FRESH = 5.0
"""Seconds after which a worker's last figures no longer count (it stopped writing)."""
RESPAWN_LIMIT = 5
RESPAWN_WINDOW = 10.0
"""A worker that dies more than RESPAWN_LIMIT times in this many seconds is a fault."""
STOP_WAIT = 40.0
"""Seconds the workers get to finish their sessions after SIGTERM (their own grace: 30 s)."""
CONFIG_ERROR = 2
"""A worker that exits with this status could not start: restarting would not help."""
HELD = frozenset({signal.SIGHUP, signal.SIGUSR1})
"""The signals passed on to the workers that must not end one: held until it handles them."""


def signals_handled() -> None:
    """In a worker, once its handlers for :data:`HELD` are in place: let those signals in,
    with any that arrived since the fork (a no-op in a process that did not block them)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD)


@dataclass(frozen=True)
class WorkerHooks:
    """How a worker tells its supervisor what happens."""

    ready: Callable[[str], None]
    """Its directory view is loaded (the text: its health)."""
    stats: Callable[[str], None]
    """Its counters line (SIGUSR1)."""
    figures: Callable[[Figures], None]
    """Its figures, every second (for the supervisor's /metrics and /healthz)."""


class Supervisor:
    """The parent of the worker processes."""

    def __init__(
        self,
        settings: Settings,
        serve: Callable[[WorkerHooks], int],
        notify: Callable[..., None],
        *,
        metrics_dir: Path | None = None,
    ) -> None:
        """``serve(hooks)`` runs one worker until it stops (its exit status), calling the
        hooks as things happen; ``notify(*states)`` speaks to systemd; ``metrics_dir``:
        where the workers count (``MetricsSocket``), served here added up."""
        self.settings = settings
        self.serve = serve
        self.notify = notify
        self.count = settings.workers
        self.metrics_dir = metrics_dir
        self.monitor: Monitor | None = None
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
        if settings.metrics_socket is not None and self.metrics_dir is not None:
            host, port = settings.metrics_socket
            try:
                self.monitor = Monitor(host, port, self.figures, multiprocess=self.metrics_dir)
            except OSError as err:
                raise LdapDkimError(
                    f"cannot open MetricsSocket {host}:{port}: {err.strerror}; "
                    "is another process using it?"
                ) from None
            self.monitor.start()
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
        # The worker starts with HELD blocked, from its first instruction on.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
        pid = -1
        try:
            pid = os.fork()
        finally:
            if pid != 0:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)
        if pid == 0:  # the worker
            status = 1
            try:
                os.close(self._ready_read)
                os.close(self._stats_read)
                if self.monitor is not None:
                    self.monitor.close()  # the supervisor's listening socket
                os.environ.pop("NOTIFY_SOCKET", None)  # the supervisor speaks to systemd
                # Not the supervisor's handlers; SIGTERM and SIGINT end a worker
                # that is still starting, HELD wait for its own (signals_handled).
                for signum in (signal.SIGHUP, signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
                    signal.signal(signum, signal.SIG_DFL)
                hooks = WorkerHooks(self._tell_ready, self._tell_stats, self._tell_figures)
                status = self.serve(hooks)
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

    def _tell_figures(self, figures: Figures) -> None:
        """In a worker: leave its figures where the supervisor's /metrics reads them."""
        if self.metrics_dir is None:
            return
        view = figures.view
        data = {
            "sessions": figures.sessions,
            "healthy": figures.health.ok,
            "why": figures.health.why,
            "mode": view.mode,
            "connected": view.connected,
            "age": view.age,
            "entries": view.entries,
            "sync_age": view.sync_age,
        }
        path = self.metrics_dir / f"view-{os.getpid()}.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data))
        temporary.replace(path)

    def figures(self) -> Figures:
        """What the supervisor's /metrics and /healthz show: all workers together."""
        views = []
        now = time.time()
        assert self.metrics_dir is not None
        for pid in self.workers:
            path = self.metrics_dir / f"view-{pid}.json"
            try:
                if now - path.stat().st_mtime > VIEW_FRESH:
                    continue
                views.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        sessions = sum(int(v.get("sessions", 0)) for v in views)
        if len(views) < self.count:
            health = Health(False, f"{len(views)} of {self.count} workers are serving")
            return Figures(sessions, DirectoryView("memory", False, None), health)
        ages = [v.get("age") for v in views]
        worst = max(views, key=lambda v: float("inf") if v.get("age") is None else v["age"])
        view = DirectoryView(
            mode=str(worst.get("mode", "memory")),
            connected=all(bool(v.get("connected")) for v in views),
            age=None if None in ages else float(worst["age"]),
            entries=int(worst.get("entries", 0)),
            sync_age=worst.get("sync_age"),
        )
        unhealthy = [v for v in views if not v.get("healthy")]
        if unhealthy:
            health = Health(False, f"a worker: {unhealthy[0].get('why', 'unhealthy')}")
        else:
            health = Health(True, f"ok: {self.count} workers serving; {views[0].get('why', '')}")
        return Figures(sessions, view, health)

    def _tell_stats(self, line: str) -> None:
        """In a worker: pass its counters line to the supervisor (one short write)."""
        os.write(self._stats_write, line.encode()[:4000] + b"\n")

    def _loop(self) -> int:
        tell = self.notify
        announced = False
        while self.workers:
            watched = [self._ready_read, self._stats_read]
            if self.monitor is not None:
                watched.append(self.monitor.fileno())
            readable, _, _ = select.select(watched, [], [], 0.2)
            if self.monitor is not None and self.monitor.fileno() in readable:
                self.monitor.handle()
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
        if self.monitor is not None:
            self.monitor.close()
        log.info("stopped")
        return 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._pending.append(signum)

    def _take_signals(self) -> list[int]:
        taken, self._pending = self._pending, []
        return taken


def add_up(lines: list[str]) -> str:
    """The workers' ``key=value`` counters lines as one: numbers added, in first-seen order.

    The replica's fields (its size, mode, age) are the same in every worker
    and are left out, as is anything not a whole number.
    """
    totals: dict[str, int] = {}
    for line in lines:
        for field in line.split():
            key, sep, value = field.partition("=")
            if sep and value.isdigit() and not key.startswith(("replica_", "directory_")):
                totals[key] = totals.get(key, 0) + int(value)
    return " ".join(f"{key}={value}" for key, value in totals.items())
