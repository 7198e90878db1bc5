"""The milter's signal handler takes no lock.

It runs in the main thread between two bytecodes, also while that thread is
inside ``Event.wait`` holding the event's lock: a handler that took that lock
(``Event.set``) waited for itself forever, and a worker so caught hung on
SIGTERM.  Here the lock is held while the handler runs, as it was then.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from ldapdkim import keys
from ldapdkim.milter.daemon import Daemon
from ldapdkim.model import Algorithm


def _daemon(tmp_path: Path) -> Daemon:
    key_file = tmp_path / "s1.pem"
    key_file.write_bytes(keys.private_pem(keys.generate(Algorithm.ED25519_SHA256)))
    key_file.chmod(0o600)
    config = tmp_path / "ldapdkim.conf"
    config.write_text(
        f"Mode s\nDomain example.com\nSelector s1\nKeyFile {key_file}\nStateDirectory {tmp_path}\n"
    )
    return Daemon(str(config))


def test_the_signal_handler_returns_while_the_main_loops_event_is_locked(tmp_path: Path) -> None:
    daemon = _daemon(tmp_path)
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):
        # The Event's private lock, held as by the main thread inside Event.wait.
        locked: threading.Condition = vars(daemon._stop)["_cond"]
        with locked:
            handler = threading.Thread(target=daemon._on_signal, args=(signum, None))
            handler.start()
            handler.join(timeout=2)
            assert not handler.is_alive(), f"the handler of {signum!r} waited for a lock"
    assert daemon._signals == [signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1]
