"""A minimal pymilter milter for MTA fixture tests, run as its own process.

    python seen_milter.py PORT RECORD_FILE

Listens on ``inet:PORT@127.0.0.1``.  At MAIL FROM and at end of message it
appends one JSON line to RECORD_FILE: ``{"stage": "envfrom" | "eom",
"macros": {name: value or null}}`` for the macros in ``MACROS``; at end of
message it adds ``X-Milter-Seen: yes``.  It runs in a process of its own
because libmilter takes over signal handling and its main loop runs once
per process; SIGTERM stops it.
"""

from __future__ import annotations

import functools
import json
import sys
import threading
from pathlib import Path
from typing import Any

import Milter

MACROS = ("i", "j", "{daemon_name}", "{auth_authen}", "{mail_addr}", "{rcpt_addr}")
HEADER = ("X-Milter-Seen", "yes")

_lock = threading.Lock()  # libmilter calls back from one thread per connection


class SeenMilter(Milter.Base):  # type: ignore[misc]
    def __init__(self, record: Path) -> None:
        self.record = record

    def _record(self, stage: str) -> None:
        macros = {name: self.getsymval(name) or None for name in MACROS}
        with _lock, self.record.open("a") as out:
            out.write(json.dumps({"stage": stage, "macros": macros}) + "\n")

    def envfrom(self, mailfrom: str, *params: Any) -> int:
        self._record("envfrom")
        return int(Milter.CONTINUE)

    def eom(self) -> int:
        self._record("eom")
        self.addheader(*HEADER)
        return int(Milter.ACCEPT)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(f"usage: {argv[0]} PORT RECORD_FILE", file=sys.stderr)
        return 2
    port, record = int(argv[1]), Path(argv[2])
    Milter.factory = functools.partial(SeenMilter, record)
    Milter.set_flags(Milter.ADDHDRS)
    Milter.runmilter("seen", f"inet:{port}@127.0.0.1", timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
