"""Our ``Authentication-Results`` header field (RFC 8601), and which existing ones are ours.

A DKIM result carries ``header.d``, ``header.i``, ``header.s``, ``header.a``
and ``header.b`` (the first eight characters of the signature, RFC 6008), so
a reader can tell several signatures of one domain apart.  The field is
written here, in the form the ``authres`` package writes (a test holds the two
to the same text), without building its objects for every message; existing
fields are read with ``authres``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import authres

from ldapdkim.model import VerifyResult

HEADER = "Authentication-Results"

_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`{|}~-]+\Z")
"""RFC 2045 token: a property value written as it is."""
_QUOTED = re.compile(r'(["\\])')


def build(authserv_id: str, results: Sequence[VerifyResult]) -> str:
    """The header field value (without the name) for ``results``; ``dkim=none`` when empty."""
    clauses = [_clause(r) for r in results] or ["dkim=none"]
    return "; ".join([authserv_id.lower(), *clauses])


def _clause(result: VerifyResult) -> str:
    """``dkim=RESULT (comment) header.b=.. header.d=.. header.i=.. header.a=.. header.s=..``."""
    parts = [f"dkim={result.result.value}"]
    comment = _comment(result.reason)
    if comment:
        parts.append(f"({comment})")
    properties = (
        ("b", result.signature_prefix),
        ("d", result.domain),
        ("i", result.identity),
        ("a", result.algorithm),
        ("s", result.selector),
    )
    parts += [f"header.{name}={_value(value)}" for name, value in properties if value]
    return " ".join(parts)


def _value(value: str) -> str:
    """A property value: as it is when it holds an ``@`` or is a token, else quoted."""
    if "@" in value or _TOKEN.match(value):
        return value
    return '"' + _QUOTED.sub(r"\\\1", value) + '"'


def _comment(reason: str) -> str:
    """A reason made safe for an RFC 5322 comment: no parentheses, backslashes or line breaks."""
    cleaned = "".join(c if c.isprintable() and c not in "()\\" else " " for c in reason)
    return " ".join(cleaned.split())[:200]


def authserv_id_of(value: str) -> str | None:
    """The authserv-id of an existing header field value, lowercase; None if unreadable."""
    try:
        parsed = authres.AuthenticationResultsHeader.parse_value(value)
    except Exception:  # authres raises several types on garbage
        text = value.strip().split(";", 1)[0].strip()
        return text.split()[0].lower() if text else None
    return str(parsed.authserv_id).lower()
