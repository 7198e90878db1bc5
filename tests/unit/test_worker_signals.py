"""A worker that is still starting keeps SIGHUP and SIGUSR1 until it handles them.

The supervisor passes both on to every worker.  Their default action ends a
process, and a worker builds its runtime (directory, replica) before it has
its handlers: under load that took long enough for a SIGUSR1 (``kill -USR1``,
the tests' stats) to end both workers of a fresh ``Workers 2`` milter.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from ldapdkim import config
from ldapdkim.milter.workers import Supervisor, WorkerHooks, signals_handled


def test_a_signal_passed_on_while_a_worker_starts_reaches_its_handler(tmp_path: Path) -> None:
    started, go = tmp_path / "started", tmp_path / "go"

    def serve(hooks: WorkerHooks) -> int:
        started.touch()
        deadline = time.monotonic() + 10
        while not go.exists() and time.monotonic() < deadline:  # building the runtime
            time.sleep(0.01)
        caught: list[int] = []
        for signum in (signal.SIGHUP, signal.SIGUSR1):
            signal.signal(signum, lambda number, frame: caught.append(number))
        signals_handled()
        hooks.stats(" ".join(str(number) for number in sorted(caught)))
        return 0

    settings = config.parse(f"Mode v\nWorkers 2\nStateDirectory {tmp_path}\n", "test.conf")
    supervisor = Supervisor(settings, serve, lambda *states: None)
    supervisor._spawn(0)
    (pid,) = supervisor.workers
    deadline = time.monotonic() + 10
    while not started.exists():
        assert time.monotonic() < deadline, "the worker did not start"
        time.sleep(0.01)
    os.kill(pid, signal.SIGUSR1)
    os.kill(pid, signal.SIGHUP)
    go.touch()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0  # not -SIGUSR1, not -SIGHUP
    said = os.read(supervisor._stats_read, 4096).decode()
    assert said == f"{signal.SIGHUP:d} {signal.SIGUSR1:d}\n"
    assert not signal.pthread_sigmask(signal.SIG_BLOCK, []) & {signal.SIGHUP, signal.SIGUSR1}
