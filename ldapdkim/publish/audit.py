"""``ldapdkim testkey``: check every key in the directory against DNS and good practice.

For each key entry and each mail domain of its entry, one :class:`KeyReport`:

- DNS: what ``selector._domainkey.domain`` publishes, compared with the
  directory's public key (:mod:`ldapdkim.publish.dnscheck`): match, mismatch,
  missing, revoked (``p=`` empty) or a DNS error;
- size: RSA under 2048 bits is weak, under 1024 bad (RFC 8301 §3.2);
- age, from the entry's ``createTimestamp`` (RFC 4512 §3.4) where the
  directory gives it;
- consistency of state and DNS: an active key must be published, a pending
  one need not be yet, a revoked one should not be any more;
  ``dkimSignPublicKey`` must match the private key.

A domain none of whose keys signs now gets a report of its own, without a
selector.  Each finding has a level: ``ok``, ``note`` (worth knowing),
``warn`` (should be fixed) or ``bad`` (wrong now: signatures fail or are not
made, or it could not be checked).  Nothing here prints; the command line
renders the reports.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from ldapdkim import schema
from ldapdkim.directory.resolution import Directory
from ldapdkim.model import Algorithm, DomainPolicy, KeyState, SigningKey
from ldapdkim.publish.dnscheck import (
    DnsStatus,
    Published,
    check,
    expected_public_key,
    key_bits,
    record_name,
)
from ldapdkim.signing.keyfetch import DnsLookup

WEAK_RSA_BITS = 2048
BAD_RSA_BITS = 1024
OLD_KEY = timedelta(days=365)
DNS_WORKERS = 16
"""DNS queries in flight at once: an audit of thousands of domains waits on DNS, not CPU."""


@enum.unique
class Level(enum.IntEnum):
    """How much a finding matters; a report's verdict is its worst finding."""

    OK = 0
    NOTE = 1
    WARN = 2
    BAD = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Finding:
    level: Level
    text: str


@dataclass(frozen=True)
class AuditedKey:
    """A key entry with its creation time, if the directory tells it."""

    key: SigningKey
    created: datetime | None = None


@dataclass(frozen=True)
class KeyReport:
    """What the audit found for one key under one mail domain (or for a domain alone)."""

    domain: str
    dn: str
    findings: tuple[Finding, ...]
    selector: str | None = None
    algorithm: Algorithm | None = None
    state: KeyState | None = None
    bits: int | None = None
    created: datetime | None = None
    dns: Published | None = None

    @property
    def verdict(self) -> Level:
        return max((f.level for f in self.findings), default=Level.OK)

    def age(self, now: datetime) -> timedelta | None:
        return now - self.created if self.created is not None else None

    def as_json(self, now: datetime) -> dict[str, object]:
        """The report as JSON-ready values."""
        age = self.age(now)
        return {
            "domain": self.domain,
            "selector": self.selector,
            "algorithm": self.algorithm.value if self.algorithm else None,
            "state": self.state.value if self.state else None,
            "bits": self.bits,
            "created": self.created.isoformat() if self.created else None,
            "age_days": age.days if age is not None else None,
            "record": self.dns.name if self.dns else None,
            "dns": self.dns.status.value if self.dns else None,
            "verdict": self.verdict.label,
            "findings": [{"level": f.level.label, "text": f.text} for f in self.findings],
            "dn": self.dn,
        }


def assess_key(domain: str, audited: AuditedKey, published: Published, now: datetime) -> KeyReport:
    """The report for one key under the mail domain ``domain``, given what DNS showed."""
    key = audited.key
    findings: list[Finding] = []
    add = findings.append
    live = key.state in (KeyState.ACTIVE, KeyState.PENDING)
    if key.problem and live:
        add(Finding(Level.BAD, key.problem))
    if key.state is not KeyState.REVOKED:
        expected = expected_public_key(key)
        if expected.problem:
            add(Finding(Level.BAD, expected.problem))
    bits = key_bits(key)
    if live and key.algorithm is Algorithm.RSA_SHA256 and bits is not None:
        if bits < BAD_RSA_BITS:
            add(Finding(Level.BAD, f"RSA key of {bits} bits: RFC 8301 forbids fewer than 1024"))
        elif bits < WEAK_RSA_BITS:
            add(Finding(Level.WARN, f"weak: RSA key of {bits} bits; rotate to a 2048-bit key"))
    if key.state is KeyState.ACTIVE and not key.problem:
        if key.not_after is not None and key.not_after <= now:
            add(
                Finding(
                    Level.WARN, f"active, but {schema.NOT_AFTER} has passed: it no longer signs"
                )
            )
        elif key.not_before is not None and key.not_before > now:
            add(Finding(Level.NOTE, f"active, signs from {key.not_before.isoformat()}"))
        if audited.created is not None and now - audited.created > OLD_KEY:
            add(Finding(Level.NOTE, "older than a year; consider 'ldapdkim rotate'"))
    findings.extend(_dns_findings(key.state, published))
    return KeyReport(
        domain=domain,
        dn=key.dn,
        findings=tuple(findings),
        selector=key.selector,
        algorithm=key.algorithm,
        state=key.state,
        bits=bits,
        created=audited.created,
        dns=published,
    )


def _dns_findings(state: KeyState, published: Published) -> Iterator[Finding]:
    name, status, detail = published.name, published.status, published.detail
    if status is DnsStatus.MATCH:
        if state is KeyState.REVOKED:
            yield Finding(
                Level.WARN,
                f"revoked, but still published at {name}; remove the record or publish "
                "it with an empty p=",
            )
        return
    if status is DnsStatus.ERROR:
        yield Finding(Level.BAD, f"cannot check {name}: {detail}")
    elif state is KeyState.ACTIVE:
        if status is DnsStatus.MISSING:
            yield Finding(
                Level.BAD,
                f"active, but {name} has no key record: its signatures fail; publish the "
                "record that 'ldapdkim dns-records' prints",
            )
        else:
            yield Finding(Level.BAD, f"active, but DNS at {name} does not match: {detail}")
    elif state is KeyState.PENDING:
        if status is DnsStatus.MISSING:
            yield Finding(Level.NOTE, f"pending, not published yet at {name}")
        else:
            yield Finding(
                Level.BAD,
                f"pending, but DNS at {name} does not match ({detail}); "
                "'ldapdkim rotate --advance' will not activate it",
            )
    elif state is KeyState.RETIRED:
        if status is DnsStatus.MISSING:
            yield Finding(Level.NOTE, f"retired and no longer published at {name}")
        elif status is DnsStatus.MISMATCH:
            yield Finding(Level.WARN, f"retired, and DNS at {name} shows another key: {detail}")
    elif status is DnsStatus.MISMATCH:
        yield Finding(Level.NOTE, f"revoked; DNS at {name} shows another key: {detail}")


def assess_domain(
    policy: DomainPolicy, domain_keys: Sequence[SigningKey], now: datetime
) -> KeyReport | None:
    """A report for the domain itself when none of its keys signs now, else None."""
    allowed = policy.algorithms
    signing = [
        k for k in domain_keys if k.signs_at(now) and (allowed is None or k.algorithm in allowed)
    ]
    if signing:
        return None
    if policy.enabled is False:
        finding = Finding(Level.NOTE, "signing is switched off (dkimSignEnabled FALSE)")
    else:
        finding = Finding(
            Level.BAD,
            "no key signs now: mail from this domain leaves unsigned; make a key active "
            "('ldapdkim rotate' then 'ldapdkim rotate --advance')",
        )
    return KeyReport(domain=", ".join(policy.names), dn=policy.dn, findings=(finding,))


# -- reading the directory ------------------------------------------------------------


def _domains(
    directory: Directory, domain: str | None
) -> list[tuple[DomainPolicy, list[AuditedKey]]]:
    found = [directory.find(domain)] if domain else list(directory.walk())
    result = []
    for policy, keys in found:
        audited = [AuditedKey(key, key.created) for key in keys]
        audited.sort(key=lambda a: (a.key.algorithm.value, a.key.selector))
        result.append((policy, audited))
    result.sort(key=lambda item: item[0].names)
    return result


def audit(
    directory: Directory,
    lookup: DnsLookup,
    *,
    now: datetime,
    domain: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[KeyReport]:
    """Reports for every key (or the keys of ``domain``), domain by domain.

    DNS is asked in parallel; ``progress(done, total)`` is called as answers come.
    """
    domains = _domains(directory, domain)
    jobs = [
        (policy, audited, name)
        for policy, keys in domains
        for audited in keys
        for name in policy.names
    ]

    def fetch(job: tuple[DomainPolicy, AuditedKey, str]) -> Published:
        _, audited, name = job
        key = audited.key
        expected = expected_public_key(key).public_key
        return check(lookup, record_name(key.selector, name), key.algorithm, expected)

    answers: list[Published] = []
    with ThreadPoolExecutor(max_workers=DNS_WORKERS) as pool:
        for answer in pool.map(fetch, jobs):
            answers.append(answer)
            if progress is not None:
                progress(len(answers), len(jobs))
    by_job = iter(answers)
    reports: list[KeyReport] = []
    for policy, keys in domains:
        for audited in keys:
            for name in policy.names:
                reports.append(assess_key(name, audited, next(by_job), now))
        lone = assess_domain(policy, [a.key for a in keys], now)
        if lone is not None:
            reports.append(lone)
    return reports
