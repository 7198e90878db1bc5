"""A secret value (a bind password, a TSIG key) that no log line, message or ``repr`` shows."""

from __future__ import annotations

import grp
import hmac
import os
import pwd
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
    """Why a file holding a secret is not safe and how to fix it, or None (OpenDKIM's
    RequireSafeKeys).  The text completes ``PATH ...``.

    Unsafe, as OpenDKIM has it: a user other than root and the one running
    ldapdkim owns the file (and so may change it), or a directory above it
    lets someone else replace it: writable by others, or group-writable for a
    group with other members.  Stricter than OpenDKIM: a file readable by its
    group is refused even when the group is the user's alone.  Less strict: a
    directory writable by others with the sticky bit (``/tmp``) is accepted,
    since no one else may rename or remove a file in it.
    """
    try:
        status = path.stat()
        real = path.resolve(strict=True)
    except OSError:
        return None  # the converters report a missing or unreadable file
    me = os.geteuid()
    fix_file = f"chmod 600 {path} and let root or the user ldapdkim starts as own it"
    fix_directory = "move it to a directory only root and the user ldapdkim starts as can change"
    if status.st_mode & 0o044:
        mode = stat.S_IMODE(status.st_mode)
        return f"is readable by group or others (mode {mode:04o}); {fix_file}"
    if status.st_uid not in (0, me):
        return (
            f"belongs to uid {status.st_uid}, neither root nor the user ldapdkim runs as; "
            f"{fix_file}"
        )
    for directory in real.parents:
        try:
            info = directory.stat()
        except OSError:
            continue
        mode, gid = info.st_mode, info.st_gid
        if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
            return (
                f"is in {directory}, which others can write to (mode "
                f"{stat.S_IMODE(mode):04o}); {fix_directory}"
            )
        if mode & stat.S_IWGRP and _group_has_others(gid, me):
            return (
                f"is in {directory}, which group {_group_name(gid)} can write to, and that "
                f"group has other members; {fix_directory}"
            )
    return None


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _group_has_others(gid: int, me: int) -> bool:
    """Whether users other than root and ``me`` are in group ``gid`` (primary or listed)."""
    if gid == 0:
        return False
    try:
        my_name = pwd.getpwuid(me).pw_name
    except KeyError:
        my_name = ""
    try:
        listed = set(grp.getgrgid(gid).gr_mem)
    except KeyError:
        return True  # a group no one can name: assume the worst
    if listed - {my_name, "root"}:
        return True
    return any(user.pw_gid == gid and user.pw_uid not in (0, me) for user in pwd.getpwall())
