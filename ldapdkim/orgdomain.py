"""Organizational domains (RFC 7489 §3.2) by the public suffix list.

The list is read from the file of Debian's ``publicsuffix`` package
(``/usr/share/publicsuffix/public_suffix_list.dat``, kept current by the
distribution; ``PublicSuffixList`` names another), once, when first needed.
The algorithm is the list's own (publicsuffix.org, "Formal algorithm"):
the longest matching rule wins, an exception rule (``!``) wins over all,
``*`` matches one label, and a name no rule matches has the public suffix
``*`` (its last label).  The organizational domain is the public suffix
plus one label.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from ldapdkim.errors import ConfigError

DEFAULT_LIST = Path("/usr/share/publicsuffix/public_suffix_list.dat")
PACKAGE = "publicsuffix"
"""The Debian package that provides :data:`DEFAULT_LIST`."""


@dataclass(frozen=True)
class SuffixList:
    rules: frozenset[tuple[str, ...]]
    exceptions: frozenset[tuple[str, ...]]

    @classmethod
    def parse(cls, text: str) -> SuffixList:
        rules: set[tuple[str, ...]] = set()
        exceptions: set[tuple[str, ...]] = set()
        for line in text.splitlines():
            rule = line.split(maxsplit=1)[0] if line.strip() else ""
            if not rule or rule.startswith("//"):
                continue
            target = exceptions if rule.startswith("!") else rules
            labels = [_a_label(label) for label in rule.lstrip("!").lower().split(".")]
            target.add(tuple(reversed(labels)))
        return cls(frozenset(rules), frozenset(exceptions))

    def public_suffix_length(self, labels: tuple[str, ...]) -> int:
        """How many labels (from the right) of a name are its public suffix."""
        best = 1  # the implicit "*" rule
        for size in range(1, len(labels) + 1):
            head = labels[:size]
            if head in self.exceptions:
                return size - 1
            wildcard = (*head[:-1], "*")
            if head in self.rules or wildcard in self.rules:
                best = size
        return best

    def organizational_domain(self, name: str) -> str:
        """``name``'s organizational domain: its public suffix and one more label."""
        labels = tuple(reversed(name.lower().rstrip(".").split(".")))
        keep = min(len(labels), self.public_suffix_length(labels) + 1)
        return ".".join(reversed(labels[:keep]))


def _a_label(label: str) -> str:
    """The list writes internationalized rules in Unicode; names here are A-labels."""
    if label.isascii():
        return label
    try:
        return label.encode("idna").decode("ascii")
    except UnicodeError:
        return label  # a rule no valid host name can match


@functools.lru_cache(maxsize=4)
def load(path: Path = DEFAULT_LIST) -> SuffixList:
    """The list in ``path``, read once.

    Raises:
        OSError: the file cannot be read (see :func:`unreadable`).
    """
    return SuffixList.parse(path.read_text(encoding="utf-8"))


def required(path: Path, source: str) -> SuffixList:
    """The list in ``path``, which ``SenderAlignment organizational`` in ``source`` needs.

    Raises:
        ConfigError: the file cannot be read; the message names it and its package.
    """
    try:
        return load(path)
    except OSError as err:
        raise ConfigError(
            f"{source}: SenderAlignment organizational needs {unreadable(path, err)}"
        ) from None


def unreadable(path: Path, err: OSError) -> str:
    """Which list cannot be read, why, and where to get it."""
    return (
        f"PublicSuffixList {path}: {err.strerror}; Debian's {PACKAGE} package provides "
        f"{DEFAULT_LIST} (apt-get install {PACKAGE}), or set PublicSuffixList to a copy"
    )
