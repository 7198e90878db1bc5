"""The status file: what the running milter says about its directory servers.

The milter writes ``StateDirectory/status.json`` while it runs::

    {"mode": "sync" | "lookup",
     "servers": [{"uri": str, "connected": bool, "last_sync": ISO 8601 | null,
                  "entries": int, "staleness_s": float | null}, ...],
     "updated": ISO 8601}

This module is that file's data model: :class:`Status` writes it
(:meth:`Status.document`) and reads it back (:func:`read_status`), and says
whether it is fresh (updated within :data:`FRESH_SECONDS`).  The command
renders it and decides its exit status (:mod:`ldapdkim.cli.status`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ldapdkim.errors import StatusUnreadable

STATUS_FILE = "status.json"
FRESH_SECONDS = 30.0
"""A status file older than this counts as stale: the milter no longer updates it."""


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
