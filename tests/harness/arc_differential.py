"""Differential testing of ARC chain validation: ldapdkim, dkimpy and Perl Mail::DKIM.

Base chains of one to three hops are sealed by real sealers (dkimpy's
``dkim.ARC`` with RSA or Ed25519 keys, Perl ``Mail::DKIM::ARC::Signer`` with
RSA), some with a mailing list changing the message between hops.  Each case
is one base chain with one mutation (:data:`MUTATIONS`: tag changes, sets
reordered, missing or duplicated, instance gaps, changed bodies and headers,
``cv=`` lies, folding, hostile sizes); a mutation that tests one clause is
resealed by :mod:`harness.arcreseal`, so that every other signature still
verifies.  Everything is deterministic by seed except the keys, made anew
for each run.

:func:`run` publishes the keys on one loopback :class:`~harness.dnsserver.DnsServer`,
has the three validators judge every case (ldapdkim's ``verify_chain`` and
dkimpy's ``arc_verify`` in this process, Mail::DKIM's ``ARC::Verifier`` in one
long-running perl process), maps each verdict to the chain validation status
of RFC 8617 §5.2 (none, pass, fail) and groups the cases where they disagree
by (mutation, ldapdkim, dkimpy, Mail::DKIM).  :data:`EXPLAINED` gives each
known class its RFC clause and says who is wrong; :data:`REQUIRED` says which
verdicts RFC 8617 allows ldapdkim for each mutation, whatever the others say.
"""

from __future__ import annotations

import fnmatch
import random
import tempfile
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from harness.arc_chains import (
    DOMAINS,
    SERVFAIL_SELECTOR,
    Base,
    Keys,
    build_base,
    build_long,
    make_keys,
    message_of,
)
from harness.arc_judges import (
    MailDkimArc,
    dkimpy_verdicts,
    ldapdkim_verdicts,
    mail_dkim_verdicts,
)
from harness.arc_mutations import LONG, MUTATIONS, NEEDS_HOPS, Mutable, required
from harness.dnsserver import DnsServer
from ldapdkim.signing.dnslookup import TxtLookup
from ldapdkim.signing.keyfetch import DnsLookup


@dataclass(frozen=True)
class Case:
    kind: str
    """The mutation, with "@ed25519" when a set is signed with Ed25519 (RFC 8463)."""
    message: bytes
    note: str


WEIGHTS = {**dict.fromkeys(MUTATIONS, 1.0), "fifty-sets": 0.01, "fifty-one-sets": 0.05}
"""How often each mutation is drawn: Mail::DKIM takes some 20 s over a chain of 50 sets
(it fails 51 sets early), so these are rare."""


def cases(
    count: int, seed: int, keys: Keys, perl: MailDkimArc, lookup: DnsLookup, pool_size: int = 0
) -> Iterator[Case]:
    """``count`` cases, each a base chain of a pool (one base per 40 cases) mutated."""
    rng = random.Random(seed)
    pool_size = pool_size or max(16, count // 40)
    pool = [build_base(n, rng, keys, perl, lookup) for n in range(pool_size)]
    long: dict[int, Base] = {}
    kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
    key_for = keys.key_for()
    for _ in range(count):
        [kind] = rng.choices(kinds, weights)
        if kind in LONG:
            size = LONG[kind]
            if size not in long:
                long[size] = build_long(size, keys, random.Random(seed + size))
            base = long[size]
        else:
            eligible = [b for b in pool if b.hops >= NEEDS_HOPS.get(kind, 1)]
            base = rng.choice(eligible)
        m = Mutable(list(base.headers), base.body, base.hops, rng, key_for)
        MUTATIONS[kind](m)
        message = message_of(m.headers, m.body)
        ed = b"a=ed25519-sha256" in message
        yield Case(kind + ("@ed25519" if ed else ""), message, f"{base.hops} hops: {base.note}")


# -- disagreements and their explanations ---------------------------------------------

_ED25519 = (
    "RFC 8617 §4.1.2 and §4.1.3 take a= from RFC 6376, to which RFC 8463 adds ed25519-sha256: "
    "an Ed25519 set is as valid as an RSA one. dkimpy 1.1's ARC verifier knows no "
    "ed25519-sha256 ('unknown signature algorithm') and Mail::DKIM 1.20240923's ARC::Verifier "
    "dies on its key-size check (Crypt::PK::Ed25519 has no size method); neither judges such "
    "a chain, so only REQUIRED checks ldapdkim's verdict on it"
)
_NO_AAR = (
    "RFC 8617 §5.2 step 3: each set holds exactly one AAR; Mail::DKIM reads AARs only to "
    "find duplicates, so a set without its AAR passes there"
)
EXPLAINED: dict[tuple[str, str, str, str], str] = {
    # Mail::DKIM is wrong.
    ("missing-aar", "fail", "fail", "pass"): _NO_AAR,
    ("aar-i", "fail", "fail", "pass"): _NO_AAR + " (here the AAR carries another set's i=)",
    ("as-h-tag", "fail", "fail", "pass"): (
        "RFC 8617 §4.1.3: the ARC-Seal has no h= tag, and one with h= is invalid (dkimpy "
        "refuses it too); Mail::DKIM ignores it"
    ),
    ("as-weak-key", "fail", "fail", "pass"): (
        "RFC 8301 §3.2: verifiers MUST NOT consider signatures with RSA keys under 1024 bits "
        "valid; Mail::DKIM's ARC verifier checks the size only in Strict mode (a 512-bit seal)"
    ),
    ("aar-cfws", "pass", "pass", "fail"): (
        "RFC 8617 §4.1.1: FWS may surround the AAR's i= and '='; Mail::DKIM finds an AAR's "
        "instance only as 'i=N;' without blanks, so it misplaces the AAR in the seal's hash"
    ),
    ("instance-junk", "fail", "fail", "died"): (
        "RFC 8617 §4.2.1: i= is 1 to 50; Mail::DKIM dies on an i= of 20 digits (an array "
        "index) where it should fail the chain"
    ),
    # dkimpy is wrong.
    ("ams-c-absent", "pass", "fail", "pass"): (
        "RFC 8617 §4.1.2: the AMS has DKIM-Signature's semantics, and RFC 6376 §3.5 makes an "
        "absent c= simple/simple; dkimpy takes relaxed/relaxed, so an AMS signed simple fails"
    ),
    ("reorder-sets", "pass", "fail", "pass"): (
        "RFC 8617 §5.1.1: a seal hashes the sets in increasing instance order wherever the "
        "fields stand; dkimpy picks them by name from the bottom of the header, as for h=, "
        "so a chain whose fields were reordered on the way fails there"
    ),
    ("instance-zero*", "fail", "none", "fail"): (
        "RFC 8617 §4.2.1: i= is 1 to 50, so a set numbered 0 makes the chain fail (§5.2 "
        "step 3); dkimpy takes the highest i=, 0, for 'no chain' and says none"
    ),
    ("fifty-one-sets", "fail", "pass", "fail"): (
        "RFC 8617 §5.2 step 1: more than 50 sets is fail; dkimpy limits only its signer"
    ),
    # Both others are wrong; ldapdkim follows the clause.
    ("aar-i-not-first*", "fail", "pass", "pass"): (
        "RFC 8617 §4.1.1: arc-info = instance [CFWS] ';' authres-payload, so the AAR opens "
        "with its i=; 'srvid; i=1; ...' has no instance and its set no AAR (§5.2 step 3). "
        "dkimpy finds i= anywhere in the field, Mail::DKIM does not need AARs"
    ),
    ("ams-h-no-from", "fail", "pass", "pass"): (
        "RFC 8617 §4.1.2 gives the AMS DKIM-Signature's semantics, and RFC 6376 §6.1.1 makes "
        "one whose h= leaves out From PERMFAIL; dkimpy and Mail::DKIM verify it"
    ),
    ("as-x-expired", "pass", "fail", "fail"): (
        "RFC 8617 §4.1.3 lists the ARC-Seal's tags (a, b, cv, d, i, s, t): x= is none of "
        "them, and unknown tags are ignored; dkimpy and Mail::DKIM apply DKIM's x= to seals"
    ),
    ("cv-uppercase", "pass", "fail", "fail"): (
        'RFC 8617 §4.1.3: cv= is one of the ABNF strings "none", "fail", "pass", '
        "which are case-insensitive (RFC 5234 §2.3); both others compare cv=PASS exactly"
    ),
    # Either verdict is allowed.
    ("as-t-future", "pass", "fail", "pass"): (
        "RFC 6376 §3.5 (t=, which RFC 8617 §4.1.3 takes): verifiers MAY ignore a signature "
        "dated in the future; dkimpy does, ldapdkim and Mail::DKIM do not"
    ),
    ("oversized-aar", "fail", "pass", "pass"): (
        "not an RFC clause: ldapdkim reads no ARC field over 16 384 octets "
        "(sigfield.MAX_SIGNATURE_FIELD, as for DKIM-Signature fields), a bound against "
        "hostile sizes that RFC 8617 does not set; this AAR of 18 KB is otherwise valid"
    ),
    # No peer can judge Ed25519 seals.
    ("*@ed25519", "*", "fail", "died"): _ED25519,
}
"""(mutation, ldapdkim, dkimpy, Mail::DKIM) -> the RFC clause, and who is wrong; the
patterns are :mod:`fnmatch`'s ("*": anything, "*@ed25519": any mutation of a chain
with an Ed25519 seal)."""


def explanation(key: tuple[str, str, str, str]) -> str | None:
    for pattern, why in EXPLAINED.items():
        if all(fnmatch.fnmatchcase(v, p) for p, v in zip(pattern, key, strict=True)):
            return why
    return None


@dataclass
class Report:
    cases: int = 0
    agree: int = 0
    mail_dkim: str = ""
    classes: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    examples: dict[tuple[str, str, str, str], list[str]] = field(default_factory=dict)
    verdicts: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(mutation, ldapdkim's verdict) for every case."""
    wrong: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(mutation, ldapdkim's verdict) for verdicts :data:`REQUIRED` does not allow."""
    samples: dict[tuple[str, str, str, str], bytes] = field(default_factory=dict)
    """The first message of each class, to reproduce it."""
    pairs: Counter[str] = field(default_factory=Counter)
    """Validator -> cases where its verdict is ldapdkim's."""

    def unexplained(self) -> dict[tuple[str, str, str, str], int]:
        return {k: n for k, n in self.classes.items() if explanation(k) is None}


def run(count: int, seed: int = 1, batch_size: int = 500) -> Report:
    report = Report()
    with DnsServer() as dns, tempfile.TemporaryDirectory(prefix="ldapdkim-arcdiff-") as tmp:
        keys = make_keys(Path(tmp))
        for name, texts in keys.records().items():
            dns.set_txt(name, *texts)
        for domain in DOMAINS:
            dns.set_servfail(f"{SERVFAIL_SELECTOR}._domainkey.{domain}")
        lookup = TxtLookup([("127.0.0.1", dns.port)], timeout=2)
        perl = MailDkimArc(dns.port, Path(tmp) / "mail_dkim_arc.log")
        report.mail_dkim = perl.version
        try:
            generated = cases(count, seed, keys, perl, lookup)
            while True:
                batch = [c for _, c in zip(range(batch_size), generated, strict=False)]
                if not batch:
                    break
                messages = [c.message for c in batch]
                # Mail::DKIM judges in its own process while this one does the other two.
                with ThreadPoolExecutor(1) as pool:
                    perl_verdicts = pool.submit(mail_dkim_verdicts, messages, perl)
                    ours = ldapdkim_verdicts(messages, lookup)
                    py = dkimpy_verdicts(messages, lookup)
                    pl = perl_verdicts.result()
                for case, a, b, c in zip(batch, ours, py, pl, strict=True):
                    _count(report, case, (case.kind, a, b, c))
        finally:
            perl.close()
    return report


def _count(report: Report, case: Case, key: tuple[str, str, str, str]) -> None:
    report.cases += 1
    kind, ours = key[0], key[1]
    report.verdicts[(kind, ours)] += 1
    report.pairs.update(
        n for n, v in zip(("dkimpy", "Mail::DKIM"), key[2:], strict=True) if v == ours
    )
    if ours not in required(kind):
        report.wrong[(kind, ours)] += 1
        report.examples.setdefault((kind, ours, "-", "-"), []).append(case.note)
    if len(set(key[1:])) == 1:
        report.agree += 1
        return
    report.classes[key] += 1
    report.samples.setdefault(key, case.message)
    notes = report.examples.setdefault(key, [])
    if len(notes) < 3:
        notes.append(case.note)
