"""Key rotation: make pending keys, and bring them into service once DNS shows them.

A key entry's life (``dkimSignKeyState``)::

    pending ──(record seen in DNS, RotationOverlap passed)──> active
    active ──(a newer key of the same algorithm became active)──> retired
    retired ──(RotationRetireAfter passed, --prune)──> deleted

Pending and retired keys are published in DNS but do not sign; only active
keys inside their window (``dkimSignNotBefore``/``dkimSignNotAfter``) sign.

**Where the overlap is measured from.**  The first ``rotate --advance`` that
finds the key record in DNS with exactly the right public key writes
``dkimSignNotBefore`` = that moment + ``RotationOverlap`` (rounded up to a
whole second) on the pending key.  A later run activates the key once that
time has come and DNS still shows the right key.  So the state lives in the
directory, where every host that runs ``rotate`` (and the milter) sees it,
not in a local file; the clock starts when the record is really visible, not
when the key was made (the record may be published days later); and the
milter honours ``dkimSignNotBefore`` itself, so even a key set active by hand
cannot sign early.  A ``dkimSignNotBefore`` that an administrator set
(``genkey --not-before``) is kept: the key becomes active from then on, if DNS
shows it.

**No moment without a signing key.**  Per domain and algorithm, the new key
is made active first, in its own write, and only after that write succeeded
are the older active keys of that algorithm retired.  A key is activated
only if it can sign: readable, valid private key, public key matching DNS,
inside its window.  Nothing else retires an active key, so the last active
key of a domain is never retired.

The decisions (:func:`plan_new_keys`, :func:`plan_advance`) are pure and
take the time as an argument; :func:`start_rotation` and :func:`advance`
carry them out against the directory and DNS.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from ldapdkim import keys, schema, sealing
from ldapdkim.directory import ldifout
from ldapdkim.directory.resolution import Directory
from ldapdkim.directory.writer import DirectoryWriter
from ldapdkim.errors import EntryChanged
from ldapdkim.lifecycle.provision import selectors_for
from ldapdkim.model import Algorithm, DomainPolicy, KeyState, SigningKey
from ldapdkim.publish.dnscheck import (
    DnsStatus,
    Published,
    check,
    expected_public_key,
    record_name,
)
from ldapdkim.publish.dnsexport import KeyRecord, zone_line
from ldapdkim.signing.keyfetch import DnsLookup


def format_time(moment: datetime) -> str:
    """A time as shown to people: ISO 8601 in UTC, whole seconds.

    >>> format_time(datetime(2026, 12, 3, 10, 0, 0, 250, tzinfo=UTC))
    '2026-12-03T10:00:00Z'
    """
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_duration(seconds: float) -> str:
    """A duration the way the configuration writes it.

    >>> [format_duration(s) for s in (172800, 5400, 90, 3.5)]
    ['2d', '90m', '90s', '3.5s']
    """
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _ceil_second(moment: datetime) -> datetime:
    """Round up to a whole second: dkimSignNotBefore (GeneralizedTime) keeps no fraction."""
    whole = moment.replace(microsecond=0)
    return whole if whole == moment else whole + timedelta(seconds=1)


def domain_label(policy: DomainPolicy) -> str:
    """The name a domain entry is shown by: its first mail domain."""
    return policy.names[0] if policy.names else policy.dn


# -- starting a rotation --------------------------------------------------------------


@dataclass(frozen=True)
class NewKey:
    """A pending key to make for a domain."""

    selector: str
    algorithm: Algorithm


def plan_new_keys(
    policy: DomainPolicy,
    domain_keys: Sequence[SigningKey],
    algorithms: Sequence[Algorithm] | None,
    selector: str,
) -> tuple[list[NewKey], list[str]]:
    """The keys to make for one domain, and notes on what is left out.

    Without ``algorithms``, one key per algorithm of the domain's active keys
    (for a domain with none: the algorithms its entry allows, else RSA).  An
    algorithm that already has a pending key is left out, so running this
    twice makes no second key.  Selectors come from ``selector`` (with
    ``-rsa`` / ``-ed25519`` for several algorithms) and get ``-2``, ``-3`` ...
    where the domain has that selector already.
    """
    if algorithms is None:
        active = {k.algorithm for k in domain_keys if k.state is KeyState.ACTIVE}
        chosen = sorted(active, key=lambda a: a.value) or list(
            policy.algorithms or (Algorithm.RSA_SHA256,)
        )
    else:
        chosen = list(dict.fromkeys(algorithms))
    notes: list[str] = []
    wanted: list[Algorithm] = []
    for algorithm in chosen:
        pending = [
            k for k in domain_keys if k.state is KeyState.PENDING and k.algorithm is algorithm
        ]
        if pending:
            notes.append(
                f"{domain_label(policy)}: pending key {pending[0].selector} ({algorithm.value}) "
                "exists already; publish its record and run 'ldapdkim rotate --advance', "
                "or delete it to start over"
            )
        else:
            wanted.append(algorithm)
    taken = {k.selector for k in domain_keys}
    new: list[NewKey] = []
    for algorithm, base in zip(wanted, selectors_for(selector, wanted), strict=True):
        candidate, number = base, 2
        while candidate in taken:
            candidate, number = f"{base}-{number}", number + 1
        taken.add(candidate)
        new.append(NewKey(candidate, algorithm))
    return new, notes


@dataclass(frozen=True)
class Created:
    """A pending key that was added to the directory, with its DNS records to publish."""

    domain: str
    dn: str
    selector: str
    algorithm: Algorithm
    zone_lines: tuple[str, ...]


def start_rotation(
    writer: DirectoryWriter,
    policy: DomainPolicy,
    domain_keys: Sequence[SigningKey],
    *,
    algorithms: Sequence[Algorithm] | None,
    selector: str,
    bits: int,
    kek: sealing.KeyEncryptionKey | None = None,
) -> tuple[list[Created], list[str]]:
    """Add the pending keys :func:`plan_new_keys` decides on; return them and the notes.

    With ``kek`` their private keys are sealed (for the first name of the domain entry).
    """
    plan, notes = plan_new_keys(policy, domain_keys, algorithms, selector)
    created: list[Created] = []
    for new in plan:
        key = keys.generate(new.algorithm, bits)
        value = sealing.stored_value(key, kek, sealing.domain_of(policy.names) or "", new.selector)
        dn, attrs = ldifout.key_record(
            policy.dn, new.selector, key, state=KeyState.PENDING, private_value=value
        )
        writer.add((dn, attrs))
        public = keys.public_key_b64(key)
        lines = tuple(
            zone_line(KeyRecord(name, new.selector, new.algorithm, public)) for name in policy.names
        )
        created.append(Created(domain_label(policy), dn, new.selector, new.algorithm, lines))
    return created, notes


# -- advancing rotations --------------------------------------------------------------


@enum.unique
class StepKind(enum.Enum):
    """What ``rotate --advance`` does, or why it does nothing, for one key."""

    WAIT_DNS = "wait-dns"
    SEEN = "seen"
    WAIT_OVERLAP = "wait-overlap"
    ACTIVATE = "activate"
    RETIRE = "retire"
    DELETE = "delete"
    PROBLEM = "problem"

    @property
    def writes(self) -> bool:
        return self in (StepKind.SEEN, StepKind.ACTIVATE, StepKind.RETIRE, StepKind.DELETE)


@dataclass(frozen=True)
class Step:
    """One decision about one key entry."""

    kind: StepKind
    domain: str
    key: SigningKey
    message: str
    at: datetime | None = None
    """SEEN: the dkimSignNotBefore to write; RETIRE: the dkimSignNotAfter to write."""

    def line(self) -> str:
        return f"{self.domain} {self.key.selector}: {self.message}"


def plan_advance(
    policy: DomainPolicy,
    domain_keys: Sequence[SigningKey],
    published: Mapping[str, Sequence[Published]],
    *,
    now: datetime,
    overlap: float,
    retire_after: float | None = None,
) -> list[Step]:
    """What to do for one domain at ``now``, in the order it must be done.

    ``published`` maps the selector of each pending key to what DNS shows
    under every name of the domain.  ``retire_after`` (seconds) asks for
    retired keys that long past their ``dkimSignNotAfter`` to be deleted.
    """
    domain = domain_label(policy)
    steps: list[Step] = []
    ready: dict[Algorithm, list[tuple[datetime, SigningKey]]] = {}
    pending = sorted(
        (k for k in domain_keys if k.state is KeyState.PENDING), key=lambda k: k.selector
    )
    for key in pending:
        key_steps, start = _pending(domain, key, published.get(key.selector, ()), now, overlap)
        steps.extend(key_steps)
        if start is not None:
            ready.setdefault(key.algorithm, []).append((start, key))
    for algorithm in sorted(ready, key=lambda a: a.value):
        candidates = sorted(ready[algorithm], key=lambda item: (item[0], item[1].selector))
        start, chosen = candidates[-1]
        if not replace(chosen, state=KeyState.ACTIVE, not_before=start).signs_at(now):
            steps.append(Step(StepKind.PROBLEM, domain, chosen, "cannot sign; not activated"))
            continue
        steps.append(Step(StepKind.ACTIVATE, domain, chosen, f"activated ({algorithm.value})"))
        for _, older in candidates[:-1]:
            steps.append(
                Step(
                    StepKind.RETIRE,
                    domain,
                    older,
                    f"retired without signing (superseded by {chosen.selector})",
                    at=now,
                )
            )
        for key in domain_keys:
            if key.state is KeyState.ACTIVE and key.algorithm is algorithm:
                steps.append(
                    Step(
                        StepKind.RETIRE,
                        domain,
                        key,
                        f"retired (replaced by {chosen.selector}); its DNS record stays "
                        "published until it is pruned",
                        at=now,
                    )
                )
    if retire_after is not None:
        for key in domain_keys:
            if (
                key.state is KeyState.RETIRED
                and key.not_after is not None
                and key.not_after + timedelta(seconds=retire_after) <= now
            ):
                names = ", ".join(record_name(key.selector, n) for n in policy.names)
                steps.append(
                    Step(
                        StepKind.DELETE,
                        domain,
                        key,
                        f"deleted (retired since {format_time(key.not_after)}); "
                        f"remove its DNS record {names}",
                    )
                )
    return steps


def _pending(
    domain: str,
    key: SigningKey,
    results: Sequence[Published],
    now: datetime,
    overlap: float,
) -> tuple[list[Step], datetime | None]:
    """Steps for one pending key, and the time it may sign from if it is ready now."""

    def problem(message: str) -> tuple[list[Step], None]:
        return [Step(StepKind.PROBLEM, domain, key, f"not activated: {message}")], None

    expected = expected_public_key(key)
    if expected.problem:
        return problem(expected.problem)
    if key.problem or key.key_data is None:
        return problem(
            key.problem
            or f"no {schema.PRIVATE_KEY} that LDAPBindUser can read; check the ACL "
            "(conf/openldap-acl.ldif)"
        )
    for result in results:
        if result.status is DnsStatus.ERROR:
            return problem(f"cannot check {result.name}: {result.detail}")
    for result in results:
        if result.status in (DnsStatus.MISMATCH, DnsStatus.REVOKED):
            return problem(
                f"DNS shows a different key at {result.name} ({result.detail}); publish "
                "the record that 'ldapdkim rotate' printed (or 'ldapdkim dns-records')"
            )
    missing = [r.name for r in results if r.status is DnsStatus.MISSING]
    if missing or not results:
        where = ", ".join(missing) or "(the domain entry has no dkimSignDomainName)"
        waiting = Step(StepKind.WAIT_DNS, domain, key, f"pending; no key record at {where} yet")
        return [waiting], None
    steps: list[Step] = []
    start = key.not_before
    if start is None:
        # Whole seconds: up, so the overlap is never cut short; without one, down, so
        # that the key is ready in this very run.
        later = now + timedelta(seconds=overlap)
        start = _ceil_second(later) if overlap > 0 else later.replace(microsecond=0)
        steps.append(
            Step(
                StepKind.SEEN,
                domain,
                key,
                f"key record seen in DNS; activates from {format_time(start)} "
                f"(RotationOverlap {format_duration(overlap)})",
                at=start,
            )
        )
    if start > now:
        if not steps:
            steps.append(
                Step(
                    StepKind.WAIT_OVERLAP,
                    domain,
                    key,
                    f"pending; key record in DNS, activates from {format_time(start)}",
                )
            )
        return steps, None
    if key.not_after is not None and key.not_after <= now:
        return problem(
            f"its {schema.NOT_AFTER} {format_time(key.not_after)} has passed; delete the "
            "entry and run 'ldapdkim rotate' again"
        )
    return steps, start


def check_pending(
    policy: DomainPolicy, domain_keys: Sequence[SigningKey], lookup: DnsLookup
) -> dict[str, list[Published]]:
    """What DNS shows for each pending key of a domain, under each of its names."""
    published: dict[str, list[Published]] = {}
    for key in domain_keys:
        if key.state is KeyState.PENDING:
            expected = expected_public_key(key).public_key
            published[key.selector] = [
                check(lookup, record_name(key.selector, name), key.algorithm, expected)
                for name in policy.names
            ]
    return published


def advance(
    directory: Directory,
    writer: DirectoryWriter,
    lookup: DnsLookup,
    *,
    now: datetime,
    overlap: float,
    retire_after: float | None = None,
) -> Iterator[Step]:
    """Plan and carry out :func:`plan_advance` for every domain; yield each step once done.

    A step whose write finds the entry changed meanwhile is yielded as a
    problem, and the domain's later steps are dropped (they assumed it).

    Raises:
        DirectoryError: the bind may not write (nothing of that domain was changed).
    """
    for policy, domain_keys in directory.walk():
        published = check_pending(policy, domain_keys, lookup)
        steps = plan_advance(
            policy, domain_keys, published, now=now, overlap=overlap, retire_after=retire_after
        )
        for step in steps:
            try:
                _carry_out(writer, step, now)
            except EntryChanged as err:
                yield Step(StepKind.PROBLEM, step.domain, step.key, str(err))
                break
            yield step


def _carry_out(writer: DirectoryWriter, step: Step, now: datetime) -> None:
    dn = step.key.dn
    state = f"({schema.KEY_STATE}={step.key.state.value})"
    if step.kind is StepKind.SEEN and step.at is not None:
        writer.replace(
            dn,
            {schema.NOT_BEFORE: [ldifout.generalized_time(step.at)]},
            assertion=f"(&{state}(!({schema.NOT_BEFORE}=*)))",
        )
    elif step.kind is StepKind.ACTIVATE:
        writer.replace(dn, {schema.KEY_STATE: [KeyState.ACTIVE.value.encode()]}, assertion=state)
    elif step.kind is StepKind.RETIRE:
        writer.replace(
            dn,
            {
                schema.KEY_STATE: [KeyState.RETIRED.value.encode()],
                schema.NOT_AFTER: [ldifout.generalized_time(step.at or now)],
            },
            assertion=state,
        )
    elif step.kind is StepKind.DELETE:
        writer.delete(dn, assertion=state)
