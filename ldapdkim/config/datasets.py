"""OpenDKIM's data sets, and the ``Keyword value`` line syntax of its files.

A *data set* is how opendkim.conf(5) spells a list in one value (opendkim(8),
DATA SETS).  ldapdkim reads the list kinds that need no database:

- an inline list, entries separated by commas and/or blanks: ``127.0.0.1, ::1``;
- ``csl:LIST``, the same with an explicit prefix (``csl:`` alone is the empty list);
- ``file:PATH``, or a bare absolute ``/PATH``: one entry per line, ``#`` starts a
  comment, blank lines are skipped;
- ``refile:PATH``: like ``file:``, but each line is a host-name pattern in which
  ``*`` matches any text (host lists only).

Relative paths are taken from ``base`` when given, else from the current
working directory, as OpenDKIM does.

The configuration file, OpenDKIM's tables (KeyTable, SigningTable) and data-set
files share one line syntax: ``#`` starts a comment that runs to the end of
the line, blank lines are skipped, and a line is a key (or keyword), blanks or
tabs, and the rest of the line as its value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

DATABASE_KINDS = frozenset(
    {"db", "dsn", "ldap", "ldaps", "ldapi", "lua", "memcache", "mdb", "erlang", "socket"}
)
"""Data-set kinds OpenDKIM knows that need a database or a script (opendkim(8))."""
FILE_KINDS = frozenset({"file", "refile", "csl"})
"""The kinds ldapdkim reads itself."""
KINDS = DATABASE_KINDS | FILE_KINDS
"""Every data-set kind OpenDKIM knows; any other ``word:`` prefix it refuses."""


def content_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number from 1, line) for each line that is not blank once its comment is cut."""
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.split("#", 1)[0].strip()
        if line:
            yield number, line


def split_key_value(line: str) -> tuple[str, str]:
    """``KEY VALUE`` (blanks or tabs between) as (key, value); value "" when there is none."""
    key, _, value = line.replace("\t", " ").partition(" ")
    return key, value.strip()


def keyword_lines(text: str) -> Iterator[tuple[int, str, str]]:
    """(line number, keyword or key as written, value) of each line of ``text``."""
    for number, line in content_lines(text):
        yield number, *split_key_value(line)


def dataset_prefix(value: str) -> str | None:
    """The ``word`` of a ``word:`` prefix as OpenDKIM reads it (lowercase), or None.

    The prefix is the text before the first colon when that colon comes before
    any comma and no second colon follows it (``db::1`` is an IPv6 address).
    """
    colon, comma = value.find(":"), value.find(",")
    if colon <= 0 or 0 <= comma < colon or value[colon + 1 : colon + 2] == ":":
        return None
    return value[:colon].lower()


def dataset_kind(value: str) -> tuple[str, str]:
    """(kind, rest) of a data-set value by OpenDKIM's rules; ``csl`` for an inline list.

    A prefix (:func:`dataset_prefix`) is the kind when OpenDKIM knows it; a
    bare absolute path is a file, or a Berkeley DB when it ends in ``.db``.

    >>> dataset_kind("refile:/etc/opendkim/signing")
    ('refile', '/etc/opendkim/signing')
    >>> dataset_kind("2001:db8::/32, ::1")
    ('csl', '2001:db8::/32, ::1')
    """
    prefix = dataset_prefix(value)
    if prefix in KINDS:
        return prefix, value[len(prefix) + 1 :]
    if value.startswith("/"):
        return ("db" if value.endswith(".db") else "file"), value
    return "csl", value


class DataSetEntry(NamedTuple):
    """One entry of a data set, and where it came from (for error messages)."""

    text: str
    where: str
    """``""`` for an inline value, else `` (PATH line N)``."""
    pattern: bool = False
    """True when the entry comes from a ``refile:`` and may hold ``*`` wildcards."""


def read_dataset(
    value: str, *, base: Path | None = None, patterns: bool = False
) -> list[DataSetEntry]:
    """Return the entries of the data set ``value`` (see the module docstring).

    ``patterns`` allows ``refile:``; only host lists give wildcards a meaning.

    Raises:
        ValueError: an unsupported data-set kind, or a file that cannot be read;
            the message says what to do.
    """
    kind, rest = dataset_kind(value.strip())
    if kind == "refile" and not patterns:
        raise ValueError(
            "refile: (wildcard patterns) only applies to host lists; "
            "use a comma list, csl:LIST or file:PATH"
        )
    if kind in ("file", "refile"):
        path, text = read_data_file(rest, base)
        where = f" ({path} line {{}})"
        return [
            DataSetEntry(line, where.format(number), kind == "refile")
            for number, line in content_lines(text)
        ]
    if kind in DATABASE_KINDS:
        also = ", refile:PATH" if patterns else ""
        raise ValueError(
            f"OpenDKIM data set type '{kind}:' is not supported by ldapdkim; "
            f"use a comma list, csl:LIST, file:PATH{also}"
        )
    return [DataSetEntry(text, "") for text in re.split(r"[,\s]+", rest) if text]


def read_data_file(path_text: str, base: Path | None) -> tuple[Path, str]:
    """The absolute path and the text of a data-set or table file.

    Raises:
        ValueError: no such file, not readable, not UTF-8; the message says what to do.
    """
    path_text = path_text.strip()
    if not path_text:
        raise ValueError("the data set names no file; write file:/path/to/list")
    path = Path(path_text)
    if not path.is_absolute():
        path = (base if base is not None else Path.cwd()) / path
    shown = repr(path_text) if path_text == str(path) else f"{path_text!r} ({path})"
    try:
        return path, path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(
            f"file {shown} does not exist; create it with one entry per line, or fix the path"
        ) from None
    except IsADirectoryError:
        raise ValueError(f"{shown} is a directory; name a file with one entry per line") from None
    except PermissionError:
        raise ValueError(
            f"file {shown} cannot be read (permission denied); "
            "make it readable by the user ldapdkim starts as"
        ) from None
    except UnicodeDecodeError:
        raise ValueError(f"file {shown} is not UTF-8 text; save it as UTF-8") from None
    except OSError as err:
        raise ValueError(f"file {shown} cannot be read ({err.strerror}); fix the path") from err
