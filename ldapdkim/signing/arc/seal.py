"""Add this hop's ARC set to a message: RFC 8617 §5.1.

The new set, instance N+1 of a chain of N, is an ARC-Authentication-Results
(``i=``, the authserv-id and the results, without comments), an
ARC-Message-Signature over the header fields and the body (relaxed/relaxed,
covering DKIM-Signature fields, ours among them, RFC 8617 §4.1.2) and an
ARC-Seal with ``cv=`` the chain's status, over every ARC set in instance
order.  A failed chain is sealed with ``cv=fail`` over the new set alone
(§5.1.2); a chain at 50 sets is not sealed (§4.2.1).

Values are folded as :mod:`ldapdkim.signing.signer` folds a DKIM-Signature:
each starts with a space, folds with CRLF and a tab, and ends without a
CRLF, ready for the milter's ``addheader``/``insheader``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Sequence

from ldapdkim.model import Header, SigningParams
from ldapdkim.signing.arc.chain import KINDS, _ChainBroken, arc_fields, chain_sets
from ldapdkim.signing.arc.verdict import MAX_INSTANCES, ArcVerdict, ChainValidation
from ldapdkim.signing.bodyhash import BodyHasher
from ldapdkim.signing.canonicalization import canonical_header, hash_header_fields
from ldapdkim.signing.keyring import KeySigner
from ldapdkim.signing.signer import (
    DEFAULT_SIGN_HEADERS,
    fold_signature,
    fold_tags,
    select_header_names,
)

DEFAULT_ARC_HEADERS: tuple[str, ...] = ("dkim-signature", *DEFAULT_SIGN_HEADERS)
"""The fields an ARC-Message-Signature covers when present: every DKIM-Signature
(RFC 8617 §4.1.2: SHOULD, so that a later hop can tell what they covered) and the
fields DKIM signs."""
NEVER_SIGNED = frozenset({"authentication-results", *(k.decode() for k in KINDS)})
"""RFC 8617 §4.1.2: not in an AMS: ARC-Seal, and Authentication-Results (later
ADMDs may delete them); the other ARC fields are covered by the seal."""

_AUTHSERV_ID = re.compile(r"[\x21-\x3a\x3c-\x7e]+\Z")


def seal(
    headers: Sequence[Header],
    body: bytes,
    verdict: ArcVerdict,
    *,
    domain: str,
    signer: KeySigner,
    authserv_id: str,
    results: str,
    timestamp: int | None = None,
    header_names: Sequence[bytes] | None = None,
    comments: bool = False,
) -> list[Header]:
    """The three fields of the new set, top to bottom: ARC-Seal, ARC-Message-Signature,
    ARC-Authentication-Results.

    ``headers`` are every field the message will carry below the new set (our
    own DKIM-Signature among them, and the chain so far); ``verdict`` what
    :func:`~ldapdkim.signing.arc.verify.verify_chain` said of that chain.
    ``results``: the A-R payload for the AAR (``method=result ...; ...``),
    without the authserv-id; its ``(comments)`` are left out unless ``comments``
    (some A-R parsers, Microsoft's among them, break on ``;`` inside one).
    ``header_names``: the fields the AMS covers, in place of
    :data:`DEFAULT_ARC_HEADERS` (From is always covered).  Insert the
    fields so that the ARC-Seal ends up on top (the order is only custom: the
    seal orders the sets by instance).

    Raises:
        ValueError: the chain is at its limit (``verdict.at_limit``), the verdict
            does not fit the chain, or an argument is unusable.
        KeyUnavailable: the signer could not sign (its token went away).
    """
    if verdict.at_limit or verdict.instances >= MAX_INSTANCES:
        raise ValueError(f"the ARC chain has {MAX_INSTANCES} sets (or more); it is not sealed")
    if not _AUTHSERV_ID.match(authserv_id):
        raise ValueError(f"authserv-id {authserv_id!r} is not a single token")
    instance = verdict.instances + 1
    cv = _cv(verdict)
    earlier = _earlier_sets(headers, verdict, cv)
    now = int(time.time()) if timestamp is None else timestamp
    algorithm = signer.algorithm.value
    common = [("a", algorithm), ("d", domain), ("s", signer.selector), ("t", str(now))]

    payload = results if comments else without_comments(results)
    aar = (b"ARC-Authentication-Results", _results_value(instance, authserv_id, payload))

    names = _names(headers, header_names)
    hasher = BodyHasher(relaxed=True)
    hasher.update(body)
    ams_tags = [("i", str(instance)), ("c", "relaxed/relaxed"), *common]
    ams_tags += [("h", ":".join(n.decode("ascii") for n in names))]
    ams_tags += [("bh", _b64(hasher.digest()))]
    unsigned = fold_tags(ams_tags, "ARC-Message-Signature")
    digest = hash_header_fields(headers, names, (b"ARC-Message-Signature", unsigned), relaxed=True)
    ams = (b"ARC-Message-Signature", unsigned + fold_signature(signer.sign_digest(digest)))

    unsigned = fold_tags([("i", str(instance)), ("cv", cv.value), *common], "ARC-Seal")
    running = hashlib.sha256()
    for name, value in [*earlier, aar, ams]:
        running.update(canonical_header(name, value, True))
    running.update(canonical_header(b"ARC-Seal", unsigned, True)[:-2])
    arc_seal = (b"ARC-Seal", unsigned + fold_signature(signer.sign_digest(running.digest())))
    return [arc_seal, ams, aar]


def _cv(verdict: ArcVerdict) -> ChainValidation:
    """``cv=`` of the new seal: the chain's status; none for the first set of a message
    without ARC fields (§5.1.1).  ARC fields without one readable instance make a failed
    chain of 0 sets: its first set says fail, which no later hop reads as a fresh start."""
    if verdict.cv is ChainValidation.FAIL:
        return ChainValidation.FAIL
    if verdict.instances == 0:
        return ChainValidation.NONE
    if verdict.cv is ChainValidation.NONE:
        raise ValueError(f"the verdict says cv=none for a chain of {verdict.instances} sets")
    return verdict.cv


def _earlier_sets(
    headers: Sequence[Header], verdict: ArcVerdict, cv: ChainValidation
) -> list[Header]:
    """The fields of the sets 1..N in the order the seal hashes them; none when the new seal
    says fail (it covers its own set only, RFC 8617 §5.1.2)."""
    if cv is not ChainValidation.PASS:
        return []
    try:
        sets = chain_sets(arc_fields(headers))
    except _ChainBroken as err:
        raise ValueError(f"the verdict says pass, but the chain is broken: {err}") from None
    if len(sets) != verdict.instances:
        raise ValueError(
            f"the verdict counts {verdict.instances} sets, the message has {len(sets)}"
        )
    return [headers[f.index] for arc_set in sets for f in arc_set.fields]


def _names(headers: Sequence[Header], header_names: Sequence[bytes] | None) -> list[bytes]:
    """The AMS's ``h=``: each wanted field once per occurrence (From always)."""
    wanted = DEFAULT_ARC_HEADERS
    if header_names is not None:
        wanted = tuple(n.decode("ascii").strip().lower() for n in header_names)
        refused = sorted(NEVER_SIGNED.intersection(wanted))
        if refused:
            raise ValueError(f"an ARC-Message-Signature must not cover {', '.join(refused)}")
    return select_header_names(headers, SigningParams(sign_headers=wanted, oversign_headers=()))


def _results_value(instance: int, authserv_id: str, results: str) -> bytes:
    """The AAR value: ``i=``, the authserv-id, then the results on a line of their own.

    The results are written as given, their white space runs made one space.

    Raises:
        ValueError: they would make a line longer than RFC 5322 §2.1.1 allows.
    """
    payload = " ".join(results.split()) or "none"
    if len(payload.encode("utf-8")) > 990:
        raise ValueError("the ARC-Authentication-Results would hold a line over 998 octets")
    return f" i={instance}; {authserv_id};\r\n\t{payload}".encode()


_TOKEN = re.compile(r'\\.|"|\(|\)|[^\\"()]+', re.DOTALL)


def without_comments(results: str) -> str:
    """``results`` without its RFC 5322 comments (nested ones too); quoted strings kept.

    >>> without_comments('dkim=pass (good; "x") header.d="a (b)" (c (d))')
    'dkim=pass  header.d="a (b)" '
    """
    kept: list[str] = []
    depth = 0
    quoted = False
    for part in _TOKEN.findall(results):
        if depth == 0 and (quoted or part == '"'):
            quoted = quoted != (part == '"')
            kept.append(part)
        elif part in ("(", ")"):
            depth = max(depth + (1 if part == "(" else -1), 0)
        elif depth == 0:
            kept.append(part)
    return "".join(kept)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
