"""Bulk provisioning: LDIF with a domain entry and fresh keys for many domains.

Key generation dominates (an RSA-2048 key takes tens of milliseconds), so keys
are made in a process pool while one process writes LDIF in input order.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, TextIO

from ldapdkim import keys, sealing
from ldapdkim.directory import ldifout
from ldapdkim.domainname import normalize_domain
from ldapdkim.errors import InvalidDomain, KeyFormatError
from ldapdkim.model import Algorithm
from ldapdkim.publish.dnsexport import KeyRecord, zone_line


@dataclass(frozen=True)
class Plan:
    """What to make for each domain."""

    base: str
    algorithms: tuple[Algorithm, ...]
    bits: int
    selectors: tuple[str, ...]
    """One selector per algorithm, same order."""
    delegation: ldifout.Delegation | None = None
    """Who may sign for every domain of the plan (on its domain entry)."""
    kek: sealing.KeyEncryptionKey | None = None
    """Seals the private keys; without one they are written in plaintext."""


def selectors_for(selector: str, algorithms: Sequence[Algorithm]) -> tuple[str, ...]:
    """One selector per algorithm; with several, each gets a suffix so they differ.

    >>> selectors_for("s202611", [Algorithm.RSA_SHA256, Algorithm.ED25519_SHA256])
    ('s202611-rsa', 's202611-ed25519')
    """
    if len(algorithms) == 1:
        return (selector,)
    return tuple(f"{selector}-{a.key_type}" for a in algorithms)


def read_domains(lines: Iterable[str], *, where: str) -> list[str]:
    """Validated, de-duplicated domains, one per line (``#`` comments, blank lines ignored).

    Raises:
        InvalidDomain: naming the file and line of the first bad domain.
    """
    seen: dict[str, None] = {}
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            seen.setdefault(normalize_domain(text), None)
        except InvalidDomain as err:
            raise InvalidDomain(f"{where}:{number}: {err}") from None
    return list(seen)


def _make_keys(job: tuple[str, tuple[Algorithm, ...], int]) -> tuple[str, list[bytes]]:
    domain, algorithms, bits = job
    return domain, [keys.private_pem(keys.generate(a, bits)) for a in algorithms]


def _generated(plan: Plan, domains: Sequence[str], jobs: int) -> Iterator[tuple[str, list[bytes]]]:
    work = [(d, plan.algorithms, plan.bits) for d in domains]
    if jobs == 1 or len(work) < 8:
        yield from map(_make_keys, work)
        return
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        yield from pool.imap(_make_keys, work, chunksize=8)


def write(
    plan: Plan,
    domains: Sequence[str],
    out: IO[str],
    txt: TextIO | None,
    *,
    jobs: int,
    progress: bool,
) -> int:
    """Write the LDIF (and TXT lines) for ``domains``; return how many were written."""
    if Algorithm.RSA_SHA256 in plan.algorithms and plan.bits < keys.MIN_RSA_BITS:
        raise KeyFormatError(
            f"RSA keys of {plan.bits} bits are refused; use at least {keys.MIN_RSA_BITS} (RFC 8301)"
        )
    stream = ldifout.LdifStream(out)
    bar = _Progress(len(domains)) if progress else None
    count = 0
    for domain, pems in _generated(plan, domains, jobs):
        stream.write(ldifout.domain_record(domain, plan.base, plan.delegation))
        parent = ldifout.domain_dn(domain, plan.base)
        for selector, pem in zip(plan.selectors, pems, strict=True):
            key = keys.load_private_key(pem, where=domain)
            value = sealing.stored_value(key, plan.kek, domain, selector)
            stream.write(ldifout.key_record(parent, selector, key, private_value=value))
            if txt is not None:
                record = KeyRecord(
                    domain, selector, keys.algorithm_of(key), keys.public_key_b64(key)
                )
                txt.write(zone_line(record) + "\n")
        count += 1
        if bar is not None:
            bar.update(count)
    if bar is not None:
        bar.finish()
    return count


class _Progress:
    """A one-line progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self, total: int) -> None:
        self.total = max(total, 1)
        self.started = time.monotonic()
        self._last = 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self._last < 0.1 and done < self.total:
            return
        self._last = now
        width = 30
        filled = width * done // self.total
        elapsed = now - self.started
        eta = elapsed / done * (self.total - done) if done else 0.0
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} "
            f"{elapsed:.0f} s elapsed, ~{eta:.0f} s left "
        )
        sys.stderr.flush()

    def finish(self) -> None:
        sys.stderr.write("\n")
