"""The ARC sets of a message and the structure of its chain (RFC 8617 §4.1, §4.2, §5.2 steps 1-4).

Finds the ARC header fields, reads each one's instance (``i=``), groups them
into sets and checks what RFC 8617 §5.2 asks before any signature is looked
at: at most 50 sets, exactly one field of each kind per set, instances 1..N
without a gap, ``cv=none`` at instance 1 only and ``cv=pass`` above it, no
``h=`` in an ARC-Seal.  A chain that breaks a rule raises :class:`_ChainBroken`
with the reason; nothing here asks DNS or hashes the body.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ldapdkim.model import Header
from ldapdkim.signing.arc.verdict import MAX_INSTANCES
from ldapdkim.signing.sigfield import MAX_SIGNATURE_FIELD
from ldapdkim.signing.taglist import parse_tag_list, plain

SEAL = b"arc-seal"
MESSAGE_SIGNATURE = b"arc-message-signature"
RESULTS = b"arc-authentication-results"
KINDS = (RESULTS, MESSAGE_SIGNATURE, SEAL)
"""The three fields of a set, in the order the ARC-Seal hashes them (RFC 8617 §5.1.1)."""
LABELS = {
    SEAL: "ARC-Seal",
    MESSAGE_SIGNATURE: "ARC-Message-Signature",
    RESULTS: "ARC-Authentication-Results",
}

MAX_ARC_FIELDS = 3 * MAX_INSTANCES
"""ARC fields in a message; more cannot form a valid chain and are not read."""
MAX_ARC_FIELD = MAX_SIGNATURE_FIELD
"""Octets of one ARC field; a longer one breaks the chain unread."""

SEAL_TAGS = frozenset({"i", "a", "b", "cv", "d", "s", "t", "h"})
"""The ARC-Seal tags of RFC 8617 §4.1.3 (and ``h=``, read only to refuse it)."""
MESSAGE_SIGNATURE_TAGS = frozenset(
    {"i", "a", "b", "bh", "c", "d", "h", "l", "q", "s", "t", "x", "z"}
)
"""The ARC-Message-Signature tags (RFC 8617 §4.1.2: DKIM-Signature's, ``i=`` an instance)."""

# RFC 8617 §4.1.1: instance = [CFWS] %s"i" [CFWS] "=" [CFWS] 1*2DIGIT [CFWS]; CFWS is
# folding white space and comments (RFC 5322 §3.2.2), which hold quoted pairs and nest
# (read here to two levels: a deeper comment leaves the AAR without an instance).
_COMMENT = rb"\((?:[^()\\]|\\.|\((?:[^()\\]|\\.)*\))*\)"
_CFWS = rb"(?:[ \t]|\r\n[ \t]|" + _COMMENT + rb")*"
_AAR_INSTANCE = re.compile(
    rb"\A" + _CFWS + rb"i" + _CFWS + rb"=" + _CFWS + rb"([0-9]+)" + _CFWS + rb";", re.DOTALL
)
_INSTANCE = re.compile(r"[0-9]{1,2}\Z")


class _ChainBroken(Exception):
    """The chain breaks a rule of RFC 8617 §5.2 (its status is ``fail``)."""


@dataclass(frozen=True)
class ArcField:
    """One ARC header field."""

    index: int
    """Position among the message's header fields."""
    kind: bytes
    """:data:`SEAL`, :data:`MESSAGE_SIGNATURE` or :data:`RESULTS`."""
    instance: int | None
    """``i=``, or None when it cannot be read or lies outside 1..50."""
    raw_instance: int | None
    """``i=`` as a number however large (to tell a chain beyond 50), None if unreadable."""
    tags: dict[str, bytes] | None
    """The tag list of an ARC-Seal or ARC-Message-Signature; None when it is not one."""
    problem: str
    """Why the field is unusable ("" when it is not)."""


@dataclass(frozen=True)
class ArcSet:
    """The three fields of one instance, by their positions in the header."""

    instance: int
    results: ArcField
    message_signature: ArcField
    seal: ArcField

    @property
    def fields(self) -> tuple[ArcField, ArcField, ArcField]:
        """AAR, AMS, AS: the order in which the ARC-Seal hashes them."""
        return (self.results, self.message_signature, self.seal)

    @property
    def cv(self) -> str:
        """The ARC-Seal's ``cv=``, lowercase (an ABNF literal)."""
        assert self.seal.tags is not None
        return plain(self.seal.tags.get("cv", b"")).lower()


def field_kind(name: bytes) -> bytes | None:
    """The ARC kind of a header field name, or None for any other field."""
    lowered = name.strip(b" \t").lower()
    return lowered if lowered in KINDS else None


def arc_fields(headers: Sequence[Header]) -> list[ArcField]:
    """Every ARC header field of ``headers``, top to bottom, each with its instance read."""
    found = []
    for index, (name, value) in enumerate(headers):
        kind = field_kind(name)
        if kind is not None:
            found.append(_read(index, kind, value))
    return found


def _read(index: int, kind: bytes, value: bytes) -> ArcField:
    label = LABELS[kind]
    if len(value) > MAX_ARC_FIELD:
        return ArcField(index, kind, None, None, None, f"an {label} field is too long")
    tags: dict[str, bytes] | None = None
    if kind == RESULTS:
        match = _AAR_INSTANCE.match(value)
        text = match.group(1).decode() if match else ""
    else:
        known = SEAL_TAGS if kind == SEAL else MESSAGE_SIGNATURE_TAGS
        try:
            tags = parse_tag_list(value, known)
        except ValueError as err:
            return ArcField(index, kind, None, None, None, f"an {label} field is malformed: {err}")
        text = plain(tags["i"]) if "i" in tags else ""
    raw = int(text[:9]) if text.isdigit() and text.isascii() else None
    if raw is None:
        return ArcField(index, kind, None, None, tags, f"an {label} field has no valid i=")
    number = raw if _INSTANCE.match(text) else None  # 1*2DIGIT (RFC 8617 §4.1.1, §4.2.1)
    if number is None or not 1 <= number <= MAX_INSTANCES:
        problem = f"an {label} field has i={text[:9]}, outside 1..{MAX_INSTANCES}"
        return ArcField(index, kind, None, raw, tags, problem)
    return ArcField(index, kind, number, number, tags, "")


def newest_instance(fields: Sequence[ArcField]) -> int:
    """The highest instance in 1..50 that a field carries; 0 when none does."""
    return max((f.instance for f in fields if f.instance is not None), default=0)


def beyond_limit(fields: Sequence[ArcField]) -> bool:
    """The chain cannot take another set: it holds instance 50 or a larger value, or
    more ARC fields than 50 sets have."""
    return len(fields) > MAX_ARC_FIELDS or any(
        f.raw_instance is not None and f.raw_instance >= MAX_INSTANCES for f in fields
    )


def chain_sets(fields: Sequence[ArcField]) -> list[ArcSet]:
    """The sets 1..N of a structurally valid chain (RFC 8617 §5.2 steps 2 to 4).

    Raises:
        _ChainBroken: the chain fails, with the reason.
    """
    if len(fields) > MAX_ARC_FIELDS:
        raise _ChainBroken(f"{len(fields)} ARC fields: more than {MAX_INSTANCES} sets can hold")
    for f in fields:
        if f.problem:
            raise _ChainBroken(f.problem)
    by_instance: dict[int, dict[bytes, list[ArcField]]] = {}
    for f in fields:
        assert f.instance is not None
        by_instance.setdefault(f.instance, {}).setdefault(f.kind, []).append(f)
    newest = max(by_instance)
    # Step 3: a chain an earlier hop marked failed stays failed, whatever it holds.
    top_seals = by_instance[newest].get(SEAL, [])
    if any(plain((s.tags or {}).get("cv", b"")).lower() == "fail" for s in top_seals):
        raise _ChainBroken(f"the ARC-Seal of instance {newest} says cv=fail")
    sets = []
    for instance in range(1, newest + 1):
        group = by_instance.get(instance)
        if group is None:
            raise _ChainBroken(f"instance {instance} is missing (the newest is {newest})")
        for kind in KINDS:
            count = len(group.get(kind, []))
            if count != 1:
                how = "no" if count == 0 else f"{count}"
                raise _ChainBroken(f"instance {instance} has {how} {LABELS[kind]} fields")
        arc_set = ArcSet(instance, group[RESULTS][0], group[MESSAGE_SIGNATURE][0], group[SEAL][0])
        _check_seal(arc_set)
        sets.append(arc_set)
    return sets


def _check_seal(arc_set: ArcSet) -> None:
    """RFC 8617 §4.1.3 and §5.2 step 4: ``cv=`` by instance; no ``h=`` in a seal."""
    tags = arc_set.seal.tags
    assert tags is not None
    if "h" in tags:
        raise _ChainBroken(f"the ARC-Seal of instance {arc_set.instance} has an h= tag")
    expected = "none" if arc_set.instance == 1 else "pass"
    if arc_set.cv != expected:
        shown = arc_set.cv[:20] or "nothing"
        raise _ChainBroken(
            f"the ARC-Seal of instance {arc_set.instance} says cv={shown}, not {expected}"
        )
