"""Our ``Authentication-Results`` header field (RFC 8601), and which existing ones are ours.

Built with the ``authres`` package, the only module that touches it.  A
DKIM result carries ``header.d``, ``header.i``, ``header.s``, ``header.a``
and ``header.b`` (the first eight characters of the signature, RFC 6008), so
a reader can tell several signatures of one domain apart.  An ARC result
(RFC 8617 §10.1) carries ``header.oldest-pass`` when an older set failed and
``smtp.remote-ip``, the client the chain was received from.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import authres
import authres.arc

from ldapdkim.model import DkimResult, VerifyResult

HEADER = "Authentication-Results"


@dataclass(frozen=True)
class ArcResult:
    """The ``arc=`` clause: a chain's validation result as the milter saw it."""

    result: str
    """none, pass or fail (the chain's cv)."""
    reason: str = ""
    oldest_pass: int = 0
    remote_ip: str | None = None


def build(authserv_id: str, results: Sequence[VerifyResult], arc: ArcResult | None = None) -> str:
    """The header field value (without the name) for ``results``; ``dkim=none`` when empty."""
    header = authres.AuthenticationResultsHeader(
        authserv_id=authserv_id, results=_clauses(results, arc)
    )
    text = str(header)
    return text.split(":", 1)[1].strip()


def payload(
    results: Sequence[VerifyResult], arc: ArcResult | None = None, *, comments: bool = False
) -> str:
    """The results part of an A-R value, without authserv-id, for an
    ARC-Authentication-Results field; comments (reasons) only when asked for."""
    text = build("x", results, arc).split(";", 1)[1]
    if not comments:
        text = _COMMENT.sub("", text)
    return " ".join(text.split()).replace(" ;", ";")


_COMMENT = re.compile(r" ?\((?:[^()\\]|\\.)*\)")
"""One comment; :func:`_comment` leaves no parenthesis or backslash inside reasons."""


def _clauses(results: Sequence[VerifyResult], arc: ArcResult | None) -> list[object]:
    if results:
        clauses = [_clause(r) for r in results]
    else:
        clauses = [authres.DKIMAuthenticationResult(result=DkimResult.NONE.value)]
    if arc is not None:
        clauses.append(
            authres.arc.ARCAuthenticationResult(
                result=arc.result,
                result_comment=_comment(arc.reason) or None,
                header_oldest_pass=str(arc.oldest_pass) if arc.oldest_pass else None,
                smtp_remote_ip=arc.remote_ip or None,
            )
        )
    return clauses


def _clause(result: VerifyResult) -> object:
    properties = []
    if result.signature_prefix:
        prefix = result.signature_prefix
        properties.append(authres.AuthenticationResultProperty("header", "b", prefix))
    return authres.DKIMAuthenticationResult(
        result=result.result.value,
        result_comment=_comment(result.reason) or None,
        header_d=result.domain or None,
        header_i=result.identity or None,
        header_s=result.selector or None,
        header_a=result.algorithm or None,
        properties=properties or None,
    )


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
