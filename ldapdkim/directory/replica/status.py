"""``ldapdkim status``: what the running milter says about its directory servers.

The milter writes ``StateDirectory/status.json`` while it runs::

    {"mode": "sync" | "lookup",
     "servers": [{"uri": str, "connected": bool, "last_sync": ISO 8601 | null,
                  "entries": int, "staleness_s": float | null}, ...],
     "updated": ISO 8601}

This module reads that file, renders it as a table (one row per server, and
the age of the file) and decides the exit status:

* 0 when at least one server is connected and the file is fresh (updated
  within :data:`FRESH_SECONDS`);
* 1 otherwise (no server connected, a stale file: the milter may be hung or
  gone, or a file that cannot be understood);
* 2 when there is no file at all (is the milter running?).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ldapdkim.errors import StatusUnreadable

STATUS_FILE = "status.json"
FRESH_SECONDS = 30.0
"""A status file older than this counts as stale: the milter no longer updates it."""

OK = 0
PROBLEM = 1
MISSING = 2


@dataclass(frozen=True)
class ServerStatus:
    uri: str
    connected: bool
    last_sync: datetime | None
    entries: int
    staleness_s: float | None
    """Seconds since this server was last known current; None when unknown."""


@dataclass(frozen=True)
class Status:
    mode: str
    servers: tuple[ServerStatus, ...]
    updated: datetime

    def age(self, now: datetime) -> float:
        """Seconds since the milter wrote the file (never negative)."""
        return max(0.0, (now - self.updated).total_seconds())

    def fresh(self, now: datetime) -> bool:
        return self.age(now) <= FRESH_SECONDS

    def connected(self) -> int:
        return sum(1 for server in self.servers if server.connected)

    def document(self) -> dict[str, Any]:
        """The JSON object of ``status.json`` (times to the second, staleness to the ms)."""
        return {
            "mode": str(self.mode),
            "servers": [
                {
                    "uri": server.uri,
                    "connected": server.connected,
                    "last_sync": _iso(server.last_sync),
                    "entries": server.entries,
                    "staleness_s": None
                    if server.staleness_s is None
                    else round(server.staleness_s, 3),
                }
                for server in self.servers
            ],
            "updated": _iso(self.updated),
        }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat(timespec="seconds")


def status_path(state_directory: Path) -> Path:
    return state_directory / STATUS_FILE


def _time(value: Any, what: str) -> datetime:
    if not isinstance(value, str):
        raise StatusUnreadable(f"{what} is {value!r}, not an ISO 8601 time")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise StatusUnreadable(f"{what} {value!r} is not an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise StatusUnreadable(f"{what} is {value!r}, not a number")
    return float(value)


def parse_status(document: Any) -> Status:
    """A :class:`Status` from the decoded JSON of a status file.

    Raises:
        StatusUnreadable: a field is missing or of the wrong type.
    """
    if not isinstance(document, Mapping):
        raise StatusUnreadable("the file does not hold a JSON object")
    mode = document.get("mode")
    if mode not in ("sync", "lookup"):
        raise StatusUnreadable(f"mode is {mode!r}, not 'sync' or 'lookup'")
    servers_doc = document.get("servers")
    if not isinstance(servers_doc, list):
        raise StatusUnreadable("servers is not a list")
    servers = []
    for n, item in enumerate(servers_doc):
        where = f"servers[{n}]"
        if not isinstance(item, Mapping):
            raise StatusUnreadable(f"{where} is not an object")
        uri = item.get("uri")
        connected = item.get("connected")
        if not isinstance(uri, str) or not isinstance(connected, bool):
            raise StatusUnreadable(f"{where} needs a string uri and a boolean connected")
        last_sync = item.get("last_sync")
        entries = _number(item.get("entries", 0), f"{where}.entries")
        servers.append(
            ServerStatus(
                uri=uri,
                connected=connected,
                last_sync=None if last_sync is None else _time(last_sync, f"{where}.last_sync"),
                entries=int(entries),
                staleness_s=None
                if item.get("staleness_s") is None
                else _number(item["staleness_s"], f"{where}.staleness_s"),
            )
        )
    return Status(str(mode), tuple(servers), _time(document.get("updated"), "updated"))


def read_status(path: Path) -> tuple[str, Status]:
    """The raw text of the status file and what it says.

    Raises:
        FileNotFoundError: there is no status file.
        StatusUnreadable: it is not valid JSON of the expected shape.
    """
    text = path.read_text(encoding="utf-8")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        raise StatusUnreadable(f"not valid JSON ({err.msg} at line {err.lineno})") from None
    return text, parse_status(document)


def exit_status(status: Status, now: datetime) -> int:
    """0 when a server is connected and the file is fresh, else 1."""
    return OK if status.connected() > 0 and status.fresh(now) else PROBLEM


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} d ago"


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def render(status: Status, now: datetime, path: Path) -> str:
    """The human-readable report: header, one row per server, verdict."""
    age = status.age(now)
    lines = [f"{path}: mode {status.mode}, updated {_stamp(status.updated)} ({_ago(age)})", ""]
    rows: list[list[str]] = [["SERVER", "STATE", "LAST SYNC", "ENTRIES", "STALENESS"]]
    for server in status.servers:
        last = "never"
        if server.last_sync is not None:
            since = max(0.0, (now - server.last_sync).total_seconds())
            last = f"{_stamp(server.last_sync)} ({_ago(since)})"
        rows.append(
            [
                server.uri,
                "connected" if server.connected else "disconnected",
                last,
                str(server.entries),
                "-" if server.staleness_s is None else f"{server.staleness_s:.1f} s",
            ]
        )
    if status.servers:
        lines += _table(rows)
    else:
        lines.append("(no servers listed)")
    lines.append("")
    connected, total = status.connected(), len(status.servers)
    if not status.fresh(now):
        lines.append(
            f"PROBLEM: the status is {age:.0f} s old (the milter rewrites it at least every "
            f"{FRESH_SECONDS:.0f} s); is the milter running?"
        )
    elif connected == 0:
        lines.append(f"PROBLEM: none of {total} directory servers is connected")
    else:
        lines.append(f"OK: {connected} of {total} directory servers connected")
    return "\n".join(lines) + "\n"


def missing_hint(path: Path) -> str:
    return (
        f"{path} does not exist; is the milter running? "
        f"StateDirectory is {path.parent} (set in the configuration file)"
    )


def now_utc() -> datetime:
    return datetime.now(UTC)
