"""Mutations of an ARC chain for the differential, and the verdicts RFC 8617 requires.

Each mutation changes one thing (a tag, a set's place or presence, an
instance, the body, a header, a ``cv=``, folding, sizes); one that tests a
single clause reseals with :mod:`harness.arcreseal`, so that every other
signature still verifies.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from harness import arcreseal
from harness.arc_chains import AS_NAME, DOMAINS, SERVFAIL_SELECTOR, T0
from harness.arcreseal import AAR, AMS, AS
from harness.forge import Header
from ldapdkim.signing.bodyhash import canonical_body

# -- mutations ------------------------------------------------------------------------


@dataclass
class Mutable:
    """A base chain being mutated: its fields, body, and what resealing needs."""

    headers: list[Header]
    body: bytes
    hops: int
    rng: random.Random
    key_for: arcreseal.KeyFor

    def position(self, i: int, name: bytes) -> int:
        return arcreseal.arc_sets(self.headers)[i][name][0]

    def value(self, i: int, name: bytes) -> bytes:
        return self.headers[self.position(i, name)][1]

    def set_tags(
        self, i: int, name: bytes, change: Callable[[list[tuple[str, str]]], list[tuple[str, str]]]
    ) -> None:
        position = self.position(i, name)
        field_name, value = self.headers[position]
        self.headers[position] = (field_name, arcreseal.render(change(arcreseal.tags(value))))

    def resign_top(self, canon: str | None = None, body_hash_too: bool = True) -> None:
        """Sign the newest AMS again (see :func:`harness.arcreseal.resign_ams`)."""
        position = self.position(self.hops, AMS)
        arcreseal.resign_ams(
            self.headers,
            self.body,
            position,
            self.key_for,
            canon=canon,
            body_hash_too=body_hash_too,
        )

    def reseal(self, start: int = 1) -> None:
        arcreseal.reseal(self.headers, self.key_for, start)

    def some(self) -> int:
        return self.rng.randint(1, self.hops)


def _replace(tag_list: list[tuple[str, str]], name: str, value: str) -> list[tuple[str, str]]:
    return [(k, value if k == name else v) for k, v in tag_list]


def _corrupt(b64: str, rng: random.Random) -> str:
    at = rng.randrange(0, max(1, len(b64) - 4))
    return b64[:at] + ("A" if b64[at] != "A" else "B") + b64[at + 1 :]


def _renumber(m: Mutable, old: int, new: int) -> None:
    for name in (AAR, AMS, AS):
        position = m.position(old, name)
        field_name, value = m.headers[position]
        if name == AAR:
            value = value.replace(f"i={old};".encode(), f"i={new};".encode(), 1)
        else:
            value = arcreseal.render(_replace(arcreseal.tags(value), "i", str(new)))
        m.headers[position] = (field_name, value)


def _seal_tag(name: str, value: str | None, *, where: str = "any") -> Callable[[Mutable], None]:
    """Set (or with None remove) a tag of one AS, then reseal from it."""

    def mutate(m: Mutable) -> None:
        i = {
            "any": m.some(),
            "first": 1,
            "top": m.hops,
            "above-1": m.rng.randint(2, max(2, m.hops)),
            "below-top": m.rng.randint(1, max(1, m.hops - 1)),
        }[where]
        if value is None:
            m.set_tags(i, AS, lambda t: [(k, v) for k, v in t if k != name])
        elif any(k == name for k, _ in arcreseal.tags(m.value(i, AS))):
            m.set_tags(i, AS, lambda t: _replace(t, name, value))
        else:
            m.set_tags(i, AS, lambda t: [*t[:-1], (name, value), t[-1]])
        m.reseal(i)

    return mutate


def _ams_tags(
    change: Callable[[list[tuple[str, str]], random.Random], list[tuple[str, str]]],
    *,
    canon: str | None = None,
    body_hash_too: bool = True,
) -> Callable[[Mutable], None]:
    """Change the newest AMS's tags, sign it again, reseal the newest AS."""

    def mutate(m: Mutable) -> None:
        m.set_tags(m.hops, AMS, lambda t: change(t, m.rng))
        m.resign_top(canon, body_hash_too)
        m.reseal(m.hops)

    return mutate


def m_none(m: Mutable) -> None:
    pass


def m_no_arc(m: Mutable) -> None:
    m.headers = [(n, v) for n, v in m.headers if n.lower() not in arcreseal.ARC_FIELDS]


def m_reorder_sets(m: Mutable) -> None:
    positions = [p for p, (n, _) in enumerate(m.headers) if n.lower() in arcreseal.ARC_FIELDS]
    fields = [m.headers[p] for p in positions]
    shuffled = fields[:]
    while shuffled == fields:
        m.rng.shuffle(shuffled)
    for p, f in zip(positions, shuffled, strict=True):
        m.headers[p] = f


def m_folding(m: Mutable) -> None:
    """Folds and runs of blanks where the fields had one blank: relaxed header
    canonicalization (RFC 6376 §3.4.2), which ARC uses throughout, removes them."""
    i, name = m.some(), m.rng.choice([AAR, AMS, AS])
    position = m.position(i, name)
    field_name, value = m.headers[position]
    gaps = [b";\r\n\t", b";  ", b"; \r\n ", b";\t"]
    parts = value.split(b"; ")
    folded = parts[0]
    for part in parts[1:]:
        folded += m.rng.choice(gaps) + part
    m.headers[position] = (field_name, folded)


def m_tag_ws(m: Mutable) -> None:
    """FWS around '=' and ';' (RFC 6376 §3.2 tag-spec), resealed."""
    i = m.some()
    position = m.position(i, AS)
    field_name, value = m.headers[position]
    specs = [f"{k} = {v}" if k != "b" else "b=" for k, v in arcreseal.tags(value)]
    specs.sort(key=lambda s: s.startswith("b="))
    m.headers[position] = (field_name, (" " + " ;\t".join(specs) + "\r\n").encode())
    m.reseal(i)


def m_tag_order(m: Mutable) -> None:
    def shuffle(t: list[tuple[str, str]], rng: random.Random) -> list[tuple[str, str]]:
        rng.shuffle(t)
        return t

    if m.rng.random() < 0.5:
        _ams_tags(shuffle)(m)
    else:
        i = m.some()
        m.set_tags(i, AS, lambda t: shuffle(t, m.rng))
        m.reseal(i)


def m_unknown_tag(m: Mutable) -> None:
    if m.rng.random() < 0.5:
        _ams_tags(lambda t, _: [("x-note", "any thing"), *t])(m)
    else:
        i = m.some()
        m.set_tags(i, AS, lambda t: [*t[:2], ("zz", "1"), *t[2:]])
        m.reseal(i)


def m_old_ams_b(m: Mutable) -> None:
    i = m.rng.randint(1, m.hops - 1)
    m.set_tags(i, AMS, lambda t: _replace(t, "b", _corrupt(dict(t)["b"], m.rng)))
    m.reseal(i)


def m_d_other_resealed(m: Mutable) -> None:
    """A seal by another domain: signed with that domain's key, so it verifies."""
    i = m.some()
    other = m.rng.choice([d for d in DOMAINS if d != arcreseal.tag(m.value(i, AS), "d")])
    m.set_tags(i, AS, lambda t: _replace(t, "d", other))
    m.reseal(i)


def _long_aar(results: int) -> Callable[[Mutable], None]:
    """An AAR with this many more results (about 45 octets each), resealed."""

    def mutate(m: Mutable) -> None:
        i = m.some()
        position = m.position(i, AAR)
        field_name, value = m.headers[position]
        extra = b"".join(
            b";\r\n  dkim=pass header.d=d%d.example header.s=s%d" % (n, n) for n in range(results)
        )
        m.headers[position] = (field_name, value.rstrip(b"\r\n") + extra + b"\r\n")
        m.reseal(i)

    return mutate


def m_body_change(m: Mutable) -> None:
    m.body += b"appended after the last seal\r\n"


def m_header_change(m: Mutable) -> None:
    m.headers = [
        (n, v.replace(b" chain ", b" Chain ", 1) if n == b"Subject" else v) for n, v in m.headers
    ]


def m_ams_b(m: Mutable) -> None:
    m.set_tags(m.hops, AMS, lambda t: _replace(t, "b", _corrupt(dict(t)["b"], m.rng)))
    m.reseal(m.hops)


def m_as_b(m: Mutable) -> None:
    i = m.some()
    m.set_tags(i, AS, lambda t: _replace(t, "b", _corrupt(dict(t)["b"], m.rng)))


def m_ams_bh(m: Mutable) -> None:
    """bh= of another body, the AMS signed over it: only the body hash is wrong."""
    _ams_tags(lambda t, rng: _replace(t, "bh", _corrupt(dict(t)["bh"], rng)), body_hash_too=False)(
        m
    )


def m_as_i(m: Mutable) -> None:
    i = m.some()
    m.set_tags(
        i,
        AS,
        lambda t: _replace(t, "i", str(m.rng.choice([n for n in range(1, m.hops + 3) if n != i]))),
    )
    m.reseal()


def m_aar_i(m: Mutable) -> None:
    i = m.some()
    position = m.position(i, AAR)
    field_name, value = m.headers[position]
    other = m.rng.choice([n for n in range(1, m.hops + 3) if n != i])
    m.headers[position] = (field_name, value.replace(f"i={i};".encode(), f"i={other};".encode(), 1))
    m.reseal()


def m_ams_i(m: Mutable) -> None:
    i = m.some()
    other = m.rng.choice([n for n in range(1, m.hops + 3) if n != i])
    m.set_tags(i, AMS, lambda t: _replace(t, "i", str(other)))
    if i == m.hops:
        arcreseal.resign_ams(m.headers, m.body, m.position(other, AMS), m.key_for)
    m.reseal()


def _missing(name: bytes) -> Callable[[Mutable], None]:
    def mutate(m: Mutable) -> None:
        i = m.some()
        del m.headers[m.position(i, name)]
        m.reseal(i)

    return mutate


def m_duplicate_set(m: Mutable) -> None:
    i = m.some()
    positions = sorted(m.position(i, n) for n in (AAR, AMS, AS))
    copies = [m.headers[p] for p in positions]
    m.headers[positions[0] : positions[0]] = copies


def m_duplicate_field(m: Mutable) -> None:
    i, name = m.some(), m.rng.choice([AAR, AMS, AS])
    position = m.position(i, name)
    m.headers.insert(position, m.headers[position])


def m_instance_gap(m: Mutable) -> None:
    """The newest set numbered N+1 (or N+2 ...), everything signed again."""
    new = m.hops + m.rng.randint(1, 3)
    _renumber(m, m.hops, new)
    arcreseal.resign_ams(m.headers, m.body, m.position(new, AMS), m.key_for)
    m.reseal()


def m_instance_zero(m: Mutable) -> None:
    _renumber(m, 1, 0)
    if m.hops == 1:
        arcreseal.resign_ams(m.headers, m.body, m.position(0, AMS), m.key_for)
    m.reseal(0)


def m_instance_junk(m: Mutable) -> None:
    i = m.some()
    junk = m.rng.choice(["x", "1x", "-1", "99999999999999999999", "", "1.0"])
    m.set_tags(i, AS, lambda t: _replace(t, "i", junk))
    m.reseal()


def m_ams_h_arc_seal(m: Mutable) -> None:
    _ams_tags(lambda t, _: [(k, v + ":arc-seal" if k == "h" else v) for k, v in t])(m)


def m_ams_c_simple(m: Mutable) -> None:
    _ams_tags(lambda t, _: _replace(t, "c", "simple/simple"))(m)


def m_ams_c_absent(m: Mutable) -> None:
    """No c=: RFC 6376 §3.5 says simple/simple, and the AMS is signed so."""
    _ams_tags(lambda t, _: [(k, v) for k, v in t if k != "c"], canon="simple/simple")(m)


def m_ams_v(m: Mutable) -> None:
    _ams_tags(lambda t, _: [("v", "1"), *t])(m)


def m_ams_expired(m: Mutable) -> None:
    _ams_tags(lambda t, _: [*t[:-1], ("x", str(T0 + 3600)), t[-1]])(m)


def m_ams_d_other(m: Mutable) -> None:
    """The newest AMS claims another domain and is signed with that domain's key."""
    current = arcreseal.tag(m.value(m.hops, AMS), "d")
    other = m.rng.choice([d for d in DOMAINS if d != current])
    _ams_tags(lambda t, _: _replace(t, "d", other))(m)


def m_d_other_raw(m: Mutable) -> None:
    """Another d= on a seal, not signed again: its key does not verify it."""
    i = m.some()
    other = m.rng.choice([d for d in DOMAINS if d != arcreseal.tag(m.value(i, AS), "d")])
    m.set_tags(i, AS, lambda t: _replace(t, "d", other))
    m.reseal(i + 1)


def m_as_dup_tag(m: Mutable) -> None:
    i = m.some()
    cv = arcreseal.tag(m.value(i, AS), "cv") or "none"
    m.set_tags(i, AS, lambda t: [*t[:-1], ("cv", cv), t[-1]])
    m.reseal(i)


def m_aar_i_not_first(m: Mutable) -> None:
    """RFC 8617 §4.1.1: arc-info = instance ";" authres-payload; here i= comes later."""
    i = m.some()
    position = m.position(i, AAR)
    field_name, value = m.headers[position]
    rest = value.split(b";", 1)[1]
    srvid, _, results = rest.strip().partition(b";")
    new = b" " + srvid + b"; i=%d;" % i + results
    m.headers[position] = (field_name, new if new.endswith(b"\r\n") else new + b"\r\n")
    # arc_sets() no longer finds this AAR by instance; seal the set as it is.
    _reseal_with_aar_at(m, i, position)


def _reseal_with_aar_at(m: Mutable, i: int, position: int) -> None:
    """Reseal sets i.. as a sealer that took the field at ``position`` as set i's AAR."""
    sets = arcreseal.arc_sets(m.headers)
    covered: list[Header] = []
    for n in sorted(sets):
        for name in (AAR, AMS, AS):
            if n == i and name == AAR:
                covered.append(m.headers[position])
                continue
            if name not in sets[n]:
                continue
            p = sets[n][name][0]
            field_name, value = m.headers[p]
            if name == AS and n >= i:
                unsigned = arcreseal.render(arcreseal._empty_b(arcreseal.tags(value)))
                key = m.key_for(arcreseal.tag(value, "d") or "", arcreseal.tag(value, "s") or "")
                value = arcreseal.with_b(
                    unsigned, arcreseal.seal_signature([*covered, (field_name, unsigned)], key)
                )
                m.headers[p] = (field_name, value)
            covered.append((field_name, value))


def m_many_fields(m: Mutable) -> None:
    """Hostile size: 500 copies of a bogus seal."""
    bogus = (AS_NAME, b" i=7; a=rsa-sha256; cv=pass; d=evil.example; s=x; b=AAAA\r\n")
    m.headers[0:0] = [bogus] * 500


def m_huge_value(m: Mutable) -> None:
    """Hostile size: a 64 KB b= on the newest seal."""
    m.set_tags(m.hops, AS, lambda t: _replace(t, "b", "A" * 65536))


def m_as_b_empty(m: Mutable) -> None:
    m.set_tags(m.some(), AS, lambda t: _replace(t, "b", ""))


def m_a_sha1(m: Mutable) -> None:
    m.set_tags(m.some(), AS, lambda t: _replace(t, "a", "rsa-sha1"))


def m_aar_cfws(m: Mutable) -> None:
    """RFC 8617 §4.1.1: instance = [CFWS] "i" [CFWS] "=" [CFWS] 1*2DIGIT [CFWS]; a
    comment and folds around the AAR's i=, resealed."""
    i = m.some()
    position = m.position(i, AAR)
    field_name, value = m.headers[position]
    written = [b"i=%d (hop %d);" % (i, i), b"i = %d ;" % i, b"(instance) i=%d;" % i,
               b"i=\r\n %d\r\n ;" % i]  # fmt: skip
    new = value.replace(f"i={i};".encode(), m.rng.choice(written), 1)
    m.headers[position] = (field_name, new)
    _reseal_with_aar_at(m, i, position)


def m_b_folded(m: Mutable) -> None:
    """FWS inside b= (RFC 6376 §3.5 base64string) of a seal or the newest AMS: the
    signature hashes its own field with b= empty, so nothing else changes."""
    i, name = m.some(), m.rng.choice([AS, AMS])
    if name == AMS:
        i = m.hops
    position = m.position(i, name)
    field_name, value = m.headers[position]
    match = re.search(rb"(?:\A|;)[ \t\r\n]*b[ \t\r\n]*=[ \t\r\n]*", value)
    assert match is not None, value
    start = match.end()
    end = value.find(b";", start)
    end = len(value.rstrip(b"\r\n")) if end < 0 else end
    # Between two base64 characters, never inside a fold the sealer made.
    cuts = [c for c in range(start + 1, end) if value[c - 1 : c + 1].isalnum()]
    cut = m.rng.choice(cuts)
    gap = m.rng.choice([b" ", b"\r\n ", b"\r\n\t", b" \r\n  "])
    m.headers[position] = (field_name, value[:cut] + gap + value[cut:])
    # The seals above cover this field as it now is (relaxed keeps one blank of a fold).
    m.reseal(i + 1 if name == AS else i)


def m_ams_l_exact(m: Mutable) -> None:
    """l= the length of the whole canonical body (RFC 6376 §3.5): the AMS covers it all."""
    canon = (arcreseal.tag(m.value(m.hops, AMS), "c") or "simple/simple").partition("/")[
        2
    ] or "simple"
    length = len(canonical_body(m.body, relaxed=canon == "relaxed"))
    _ams_tags(lambda t, _: [*t[:-1], ("l", str(length)), t[-1]])(m)


def m_ams_h_no_from(m: Mutable) -> None:
    """An AMS that does not sign From: RFC 6376 §6.1.1 (PERMFAIL), whose semantics the
    AMS has (RFC 8617 §4.1.2)."""
    _ams_tags(
        lambda t, _: [
            (k, ":".join(n for n in v.split(":") if n.strip().lower() != "from") if k == "h" else v)
            for k, v in t
        ]
    )(m)


def _seal_key(selector: str) -> Callable[[Mutable], None]:
    """A seal signed with another selector's key (and s= naming it)."""

    def mutate(m: Mutable) -> None:
        i = m.some()
        m.set_tags(i, AS, lambda t: _replace(_replace(t, "s", selector), "a", "rsa-sha256"))
        m.reseal(i)

    return mutate


MUTATIONS: dict[str, Callable[[Mutable], None]] = {
    "none": m_none,
    "no-arc": m_no_arc,
    "reorder-sets": m_reorder_sets,
    "folding": m_folding,
    "tag-ws": m_tag_ws,
    "tag-order": m_tag_order,
    "unknown-tag": m_unknown_tag,
    "old-ams-b": m_old_ams_b,
    "as-d-other": m_d_other_resealed,
    "ams-d-other": m_ams_d_other,
    "huge-aar": _long_aar(150),
    "oversized-aar": _long_aar(400),
    "ams-c-simple": m_ams_c_simple,
    "ams-c-absent": m_ams_c_absent,
    "ams-v": m_ams_v,
    "as-t-future": _seal_tag("t", "4102444800"),
    "as-no-t": _seal_tag("t", None),
    "body-change": m_body_change,
    "header-change": m_header_change,
    "ams-b": m_ams_b,
    "as-b": m_as_b,
    "as-b-empty": m_as_b_empty,
    "ams-bh": m_ams_bh,
    "as-i": m_as_i,
    "aar-i": m_aar_i,
    "ams-i": m_ams_i,
    "missing-aar": _missing(AAR),
    "missing-ams": _missing(AMS),
    "missing-as": _missing(AS),
    "duplicate-set": m_duplicate_set,
    "duplicate-field": m_duplicate_field,
    "instance-gap": m_instance_gap,
    "instance-zero": m_instance_zero,
    "instance-junk": m_instance_junk,
    "cv-pass-at-1": _seal_tag("cv", "pass", where="first"),
    "cv-none-above-1": _seal_tag("cv", "none", where="above-1"),
    "cv-fail-top": _seal_tag("cv", "fail", where="top"),
    "cv-fail-below": _seal_tag("cv", "fail", where="below-top"),
    "cv-junk": _seal_tag("cv", "maybe"),
    "cv-uppercase": _seal_tag("cv", "PASS", where="above-1"),
    "cv-absent": _seal_tag("cv", None),
    "as-h-tag": _seal_tag("h", "from:to"),
    "as-a-unknown": _seal_tag("a", "rsa-sha512"),
    "as-a-sha1": m_a_sha1,
    "as-s-unknown": _seal_tag("s", "nokey"),
    "as-d-other-raw": m_d_other_raw,
    "as-dup-tag": m_as_dup_tag,
    "as-x-expired": _seal_tag("x", str(T0 + 60)),
    "ams-h-arc-seal": m_ams_h_arc_seal,
    "ams-expired": m_ams_expired,
    "aar-i-not-first": m_aar_i_not_first,
    "aar-cfws": m_aar_cfws,
    "b-folded": m_b_folded,
    "ams-l-exact": m_ams_l_exact,
    "ams-h-no-from": m_ams_h_no_from,
    "as-weak-key": _seal_key("weak"),
    "as-key-servfail": _seal_key(SERVFAIL_SELECTOR),
    "many-fields": m_many_fields,
    "huge-value": m_huge_value,
    "fifty-sets": m_none,
    "fifty-one-sets": m_none,
}
"""Mutation name -> what it does to a base chain (in place)."""

NEEDS_HOPS = {"old-ams-b": 2, "cv-none-above-1": 2, "cv-fail-below": 2, "cv-uppercase": 2}
"""Mutations that need a base chain of at least this many sets."""

LONG = {"fifty-sets": 50, "fifty-one-sets": 51}
"""Mutations whose chain is forged with this many sets, not taken from the pool."""

REQUIRED: dict[str, frozenset[str]] = {
    # RFC 8617 §5.2 step 1: no ARC set, cv is none.
    "no-arc": frozenset({"none"}),
    # Valid chains: §5.2 steps 3-7 hold; RFC 6376 §3.2 (FWS in tag-spec, unknown tags
    # ignored, tags in any order) and §3.4.2 (relaxed header canonicalization) apply
    # to the AMS and AS as to a DKIM-Signature (RFC 8617 §4.1.2, §4.1.3); the sets are
    # found by instance, not by position (§4.2.1, §5.1.1); only the newest AMS must
    # validate (§5.2 step 4), so an older one the list broke does not matter; any d=
    # may seal; RFC 8617 §4.1.2 tells a validator to ignore v= in an AMS; no c= is
    # simple/simple (RFC 6376 §3.5); t= is only recommended (§4.1.3).
    **dict.fromkeys(
        ["none", "reorder-sets", "folding", "tag-ws", "aar-cfws", "b-folded", "ams-l-exact",
         "tag-order", "unknown-tag", "old-ams-b", "as-d-other", "ams-d-other", "huge-aar",
         "ams-c-simple", "ams-c-absent", "ams-v", "as-no-t", "fifty-sets"],
        frozenset({"pass"}),
    ),
    # RFC 8617 §4.1.3 lists the AS tags (a, b, cv, d, i, s, t): x= is none of them, and
    # unknown tags are ignored (RFC 6376 §3.2); cv's values are ABNF strings, which are
    # case-insensitive (RFC 5234 §2.3).
    **dict.fromkeys(["as-x-expired", "cv-uppercase"], frozenset({"pass"})),
    # RFC 6376 §3.5: a t= in the future MAY be refused.  ldapdkim reads no field over
    # 16 384 octets (sigfield.MAX_SIGNATURE_FIELD), a limit of its own against hostile
    # sizes; RFC 8617 has none.
    **dict.fromkeys(["as-t-future", "oversized-aar"], frozenset({"pass", "fail"})),
}  # fmt: skip
"""Mutation -> the verdicts RFC 8617 allows ldapdkim; every other mutation must give fail:
the newest AMS broken (§5.2 step 4), a seal broken or unverifiable (§5.2 step 5;
RFC 6376 §3.2, §3.5, §6.1 for its tags and key; RFC 8301 for rsa-sha1), a set
missing, duplicated or out of 1..N (§5.2 step 3, §4.2.1: i= is 1 to 50; step 1:
more than 50 sets), a cv= other than none at 1 and pass above (§5.2 steps 2-3), an
h= in a seal (§4.1.3), an AMS signing ARC-Seal (§4.1.2), an AAR not starting with
its i= (§4.1.1)."""


def required(kind: str) -> frozenset[str]:
    return REQUIRED.get(kind.partition("@")[0], frozenset({"fail"}))
