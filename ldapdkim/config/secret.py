"""A secret value (a bind password, a TSIG key) that no log line, message or ``repr`` shows."""

from __future__ import annotations

import hmac
import os
import stat
from pathlib import Path


class Secret:
    """A string that is never shown: ``repr`` and ``str`` give ``Secret('***')``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself; call it only where the value is handed to a library."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))


def read_secret_file(path: Path) -> Secret | None:
    """The first line of ``path`` (UTF-8, without its line end); None when that line is empty.

    Raises:
        OSError, UnicodeDecodeError: as reading the file raises them, for the
            caller to name with the keyword or option that gave the path.
    """
    first = path.read_text(encoding="utf-8").split("\n", 1)[0].removesuffix("\r")
    return Secret(first) if first else None


def unsafe(path: Path) -> str | None:
    """Why a file holding a secret is not safe, or None (OpenDKIM's RequireSafeKeys).

    Unsafe: group or others may read it, or a user other than root and the
    one running ldapdkim owns it (and so may change it).
    """
    try:
        status = path.stat()
    except OSError:
        return None  # the converters report a missing or unreadable file
    if status.st_mode & 0o044:
        return f"is readable by group or others (mode {stat.S_IMODE(status.st_mode):04o})"
    if status.st_uid not in (0, os.geteuid()):
        return f"belongs to uid {status.st_uid}, neither root nor the user ldapdkim runs as"
    return None
