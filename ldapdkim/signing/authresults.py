"""Our ``Authentication-Results`` header field (RFC 8601), and which existing ones are ours.

A DKIM result carries ``header.d``, ``header.i``, ``header.s``, ``header.a``
and ``header.b`` (the first eight characters of the signature, RFC 6008), so
a reader can tell several signatures of one domain apart.  An ARC result
(RFC 8617 §10.1) carries ``header.oldest-pass`` when an older set failed and
``smtp.remote-ip``, the client the chain was received from.  The DKIM clauses
are written here, in the form the ``authres`` package writes (a test holds the
two to the same text), without building its objects for every message;
existing fields are read with ``authres``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

import authres
import authres.arc

from ldapdkim.model import VerifyResult
from ldapdkim.signing.arc import ArcVerdict, ChainValidation

HEADER = "Authentication-Results"

_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`{|}~-]+\Z")
"""RFC 2045 token: a property value written as it is."""
_QUOTED = re.compile(r'(["\\])')


def build(authserv_id: str, results: Sequence[VerifyResult], arc: str | None = None) -> str:
    """The header field value (without the name) for ``results``; ``dkim=none`` when
    empty.  ``arc``: an ``arc=`` clause (:func:`arc_clause`) to add after them."""
    clauses = [_clause(r) for r in results] or ["dkim=none"]
    if arc:
        clauses.append(arc)
    return "; ".join([authserv_id.lower(), *clauses])


def payload(results: Sequence[VerifyResult], arc: str | None = None) -> str:
    """The results part of an A-R value, without authserv-id, on one line: what an
    ARC-Authentication-Results records (the sealer drops the comments unless asked)."""
    return " ".join(build("x", results, arc).split(";", 1)[1].split())


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


def arc_clause(verdict: ArcVerdict, remote_ip: str | None = None, *, comment: bool = True) -> str:
    """The ``arc=`` result of RFC 8617 §4.4 / RFC 8601 for ``verdict``, one clause.

    Properties: ``header.oldest-pass`` when it is not 0 (RFC 8617 §5.2 step 6)
    and ``smtp.remote-ip`` when the caller gives the client's address.  The
    comment (the reason of a failure; the newest instance and its sealer on a
    pass) is left out with ``comment=False``, as in an ARC-Authentication-Results:
    some A-R parsers break on ``;`` inside comments.
    """
    text = ""
    if comment:
        if verdict.cv is ChainValidation.PASS:
            text = f"i={verdict.instances} sealer {verdict.sealer or 'unknown'}"
        else:
            text = verdict.reason
    result = authres.arc.ARCAuthenticationResult(
        result=verdict.cv.value,
        result_comment=_comment(text).replace(";", ",") or None,
        header_oldest_pass=str(verdict.oldest_pass) if verdict.oldest_pass else None,
        smtp_remote_ip=_address(remote_ip),
    )
    return str(result)


def _address(text: str | None) -> str | None:
    """An IP address as the A-R property carries it; None for anything else (the MTA's
    macro may hold a name or nothing)."""
    try:
        return str(ipaddress.ip_address((text or "").strip().removeprefix("IPv6:")))
    except ValueError:
        return None


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
