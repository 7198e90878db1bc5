"""What ``rotate`` decides, with a fake clock and fake DNS answers: no directory, no network.

The walk-through against slapd and a DNS server is tests/integration/test_rotation.py.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from ldapdkim import keys
from ldapdkim.lifecycle.rotation import NewKey, Step, StepKind, plan_advance, plan_new_keys
from ldapdkim.model import Algorithm, DomainPolicy, KeyState, SigningKey
from ldapdkim.publish.dnscheck import DnsStatus, Published

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
DAY = 86400.0
POLICY = DomainPolicy(dn="ou=example.com,ou=domains,dc=example,dc=com", names=("example.com",))

RSA = Algorithm.RSA_SHA256
ED = Algorithm.ED25519_SHA256


def key(
    selector: str,
    state: KeyState,
    algorithm: Algorithm = RSA,
    *,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    readable: bool = True,
) -> SigningKey:
    # Ed25519 private keys stand in for both algorithms: generating RSA keys is slow and
    # what is decided here does not depend on the kind of key, only on the entry.
    private = keys.generate(ED)
    return SigningKey(
        dn=f"dkimSignSelector={selector},{POLICY.dn}",
        selector=selector,
        algorithm=algorithm,
        state=state,
        key_data=keys.private_pem(private) if readable else None,
        public_key=keys.public_key_b64(private),
        not_before=not_before,
        not_after=not_after,
    )


def dns(*keys_and_status: tuple[SigningKey, DnsStatus]) -> dict[str, list[Published]]:
    return {
        k.selector: [Published(f"{k.selector}._domainkey.example.com", status, "detail")]
        for k, status in keys_and_status
    }


def kinds(steps: Sequence[Step]) -> list[tuple[StepKind, str]]:
    return [(s.kind, s.key.selector) for s in steps]


# -- starting a rotation ----------------------------------------------------------------


def test_new_keys_follow_the_algorithms_of_the_active_keys() -> None:
    current = [key("s1-rsa", KeyState.ACTIVE, RSA), key("s1-ed", KeyState.ACTIVE, ED)]
    new, notes = plan_new_keys(POLICY, current, None, "s202612")
    assert new == [NewKey("s202612-ed25519", ED), NewKey("s202612-rsa", RSA)]
    assert notes == []


def test_a_taken_selector_gets_a_number() -> None:
    current = [key("s202612", KeyState.RETIRED), key("s202612-2", KeyState.ACTIVE)]
    new, _ = plan_new_keys(POLICY, current, [RSA], "s202612")
    assert new == [NewKey("s202612-3", RSA)]


def test_no_second_pending_key_for_an_algorithm() -> None:
    current = [key("s1", KeyState.ACTIVE, RSA), key("s2", KeyState.PENDING, RSA)]
    new, notes = plan_new_keys(POLICY, current, None, "s202612")
    assert new == []
    assert notes == [
        "example.com: pending key s2 (rsa-sha256) exists already; publish its record and "
        "run 'ldapdkim rotate --advance', or delete it to start over"
    ]


def test_a_domain_without_active_keys_gets_what_its_entry_allows() -> None:
    policy = replace(POLICY, algorithms=(ED,))
    assert plan_new_keys(policy, [], None, "s1")[0] == [NewKey("s1", ED)]
    assert plan_new_keys(POLICY, [], None, "s1")[0] == [NewKey("s1", RSA)]


# -- advancing ----------------------------------------------------------------------------


def test_nothing_happens_before_the_record_is_in_dns() -> None:
    old, new = key("s1", KeyState.ACTIVE), key("s2", KeyState.PENDING)
    steps = plan_advance(
        POLICY, [old, new], dns((new, DnsStatus.MISSING)), now=NOW, overlap=2 * DAY
    )
    assert kinds(steps) == [(StepKind.WAIT_DNS, "s2")]
    assert not any(s.kind.writes for s in steps)


def test_the_first_sighting_starts_the_overlap() -> None:
    old, new = key("s1", KeyState.ACTIVE), key("s2", KeyState.PENDING)
    now = NOW + timedelta(microseconds=1)
    steps = plan_advance(POLICY, [old, new], dns((new, DnsStatus.MATCH)), now=now, overlap=DAY)
    assert kinds(steps) == [(StepKind.SEEN, "s2")]
    # GeneralizedTime keeps whole seconds: rounded up, never down.
    assert steps[0].at == NOW + timedelta(days=1, seconds=1)
    assert steps[0].line() == (
        "example.com s2: key record seen in DNS; activates from 2026-12-02T12:00:01Z "
        "(RotationOverlap 1d)"
    )


def test_nothing_happens_while_the_overlap_runs() -> None:
    old = key("s1", KeyState.ACTIVE)
    new = key("s2", KeyState.PENDING, not_before=NOW + timedelta(seconds=1))
    steps = plan_advance(POLICY, [old, new], dns((new, DnsStatus.MATCH)), now=NOW, overlap=DAY)
    assert kinds(steps) == [(StepKind.WAIT_OVERLAP, "s2")]


def test_after_the_overlap_the_new_key_is_activated_before_the_old_is_retired() -> None:
    old_rsa, old_ed = key("s1", KeyState.ACTIVE, RSA), key("e1", KeyState.ACTIVE, ED)
    new = key("s2", KeyState.PENDING, RSA, not_before=NOW)
    steps = plan_advance(
        POLICY, [old_rsa, old_ed, new], dns((new, DnsStatus.MATCH)), now=NOW, overlap=DAY
    )
    assert kinds(steps) == [(StepKind.ACTIVATE, "s2"), (StepKind.RETIRE, "s1")]
    assert steps[1].at == NOW


def test_no_overlap_activates_in_the_run_that_sees_the_record() -> None:
    old, new = key("s1", KeyState.ACTIVE), key("s2", KeyState.PENDING)
    now = NOW + timedelta(milliseconds=700)
    steps = plan_advance(POLICY, [old, new], dns((new, DnsStatus.MATCH)), now=now, overlap=0)
    assert steps[0].at == NOW
    assert kinds(steps) == [
        (StepKind.SEEN, "s2"),
        (StepKind.ACTIVATE, "s2"),
        (StepKind.RETIRE, "s1"),
    ]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (DnsStatus.MISMATCH, "DNS shows a different key at s2._domainkey.example.com"),
        (DnsStatus.REVOKED, "DNS shows a different key at s2._domainkey.example.com"),
        (DnsStatus.ERROR, "cannot check s2._domainkey.example.com: detail"),
    ],
)
def test_wrong_or_unreadable_dns_is_a_problem_and_changes_nothing(
    status: DnsStatus, expected: str
) -> None:
    old, new = key("s1", KeyState.ACTIVE), key("s2", KeyState.PENDING, not_before=NOW)
    steps = plan_advance(POLICY, [old, new], dns((new, status)), now=NOW, overlap=0)
    assert kinds(steps) == [(StepKind.PROBLEM, "s2")]
    assert steps[0].message.startswith(f"not activated: {expected}")


def test_a_key_that_cannot_sign_is_never_activated_and_the_old_one_stays() -> None:
    old = key("s1", KeyState.ACTIVE)
    new = key("s2", KeyState.PENDING, not_before=NOW, readable=False)
    steps = plan_advance(POLICY, [old, new], dns((new, DnsStatus.MATCH)), now=NOW, overlap=0)
    assert kinds(steps) == [(StepKind.PROBLEM, "s2")]
    assert "no dkimSignPrivateKey that LDAPBindUser can read" in steps[0].message


def test_a_public_key_attribute_that_contradicts_the_private_key_blocks_activation() -> None:
    other = keys.public_key_b64(keys.generate(ED))
    new = replace(key("s2", KeyState.PENDING, not_before=NOW), public_key=other)
    steps = plan_advance(POLICY, [new], dns((new, DnsStatus.MATCH)), now=NOW, overlap=0)
    assert kinds(steps) == [(StepKind.PROBLEM, "s2")]
    assert "dkimSignPublicKey does not match dkimSignPrivateKey" in steps[0].message


def test_a_key_whose_window_closed_while_pending_is_not_activated() -> None:
    new = key("s2", KeyState.PENDING, not_before=NOW - timedelta(days=2), not_after=NOW)
    steps = plan_advance(POLICY, [new], dns((new, DnsStatus.MATCH)), now=NOW, overlap=0)
    assert kinds(steps) == [(StepKind.PROBLEM, "s2")]


def test_of_two_ready_keys_the_newest_is_activated_and_the_other_never_signs() -> None:
    old = key("s1", KeyState.ACTIVE)
    a = key("s2", KeyState.PENDING, not_before=NOW - timedelta(hours=2))
    b = key("s3", KeyState.PENDING, not_before=NOW - timedelta(hours=1))
    steps = plan_advance(
        POLICY, [old, a, b], dns((a, DnsStatus.MATCH), (b, DnsStatus.MATCH)), now=NOW, overlap=0
    )
    assert kinds(steps) == [
        (StepKind.ACTIVATE, "s3"),
        (StepKind.RETIRE, "s2"),
        (StepKind.RETIRE, "s1"),
    ]


def test_prune_deletes_only_keys_retired_longer_than_the_window() -> None:
    long_ago = key("s0", KeyState.RETIRED, not_after=NOW - timedelta(days=8))
    lately = key("s1", KeyState.RETIRED, not_after=NOW - timedelta(days=6))
    undated = key("s9", KeyState.RETIRED)
    revoked = key("r1", KeyState.REVOKED, not_after=NOW - timedelta(days=30))
    domain_keys = [long_ago, lately, undated, revoked, key("s2", KeyState.ACTIVE)]
    steps = plan_advance(POLICY, domain_keys, {}, now=NOW, overlap=DAY, retire_after=7 * DAY)
    assert kinds(steps) == [(StepKind.DELETE, "s0")]
    assert steps[0].message.endswith("remove its DNS record s0._domainkey.example.com")
    assert plan_advance(POLICY, domain_keys, {}, now=NOW, overlap=DAY) == []


def test_every_alias_must_publish_the_record() -> None:
    policy = replace(POLICY, names=("example.com", "example.net"))
    new = key("s2", KeyState.PENDING, not_before=NOW)
    published = {
        "s2": [
            Published("s2._domainkey.example.com", DnsStatus.MATCH),
            Published("s2._domainkey.example.net", DnsStatus.MISSING),
        ]
    }
    steps = plan_advance(policy, [new], published, now=NOW, overlap=0)
    assert kinds(steps) == [(StepKind.WAIT_DNS, "s2")]
    assert steps[0].message == "pending; no key record at s2._domainkey.example.net yet"


# -- the guarantee: never a moment without a signing key -------------------------------


def _apply(domain_keys: list[SigningKey], step: Step) -> list[SigningKey]:
    """The keys as the directory holds them after ``step`` was written."""
    result = []
    for k in domain_keys:
        if k.dn != step.key.dn:
            result.append(k)
        elif step.kind is StepKind.SEEN:
            result.append(replace(k, not_before=step.at))
        elif step.kind is StepKind.ACTIVATE:
            result.append(replace(k, state=KeyState.ACTIVE))
        elif step.kind is StepKind.RETIRE:
            result.append(replace(k, state=KeyState.RETIRED, not_after=step.at))
        elif step.kind is not StepKind.DELETE:
            result.append(k)
    return result


def _signing(domain_keys: Sequence[SigningKey], algorithm: Algorithm) -> bool:
    return any(k.signs_at(NOW) and k.algorithm is algorithm for k in domain_keys)


STATUSES = [DnsStatus.MATCH, DnsStatus.MISSING, DnsStatus.MISMATCH, DnsStatus.ERROR]
PENDING_KINDS = ["ready", "waiting", "unseen", "unreadable"]


@pytest.mark.parametrize(
    ("first", "second", "status"),
    list(itertools.product(PENDING_KINDS, PENDING_KINDS, STATUSES)),
)
def test_after_every_single_write_each_algorithm_that_signed_still_signs(
    first: str, second: str, status: DnsStatus
) -> None:
    def pending(selector: str, kind: str) -> SigningKey:
        start = {"ready": NOW, "waiting": NOW + timedelta(hours=1)}.get(kind)
        return key(selector, KeyState.PENDING, not_before=start, readable=kind != "unreadable")

    domain_keys = [
        key("s1", KeyState.ACTIVE, RSA),
        key("e1", KeyState.ACTIVE, ED),
        pending("s2", first),
        pending("s3", second),
    ]
    published = dns((domain_keys[2], status), (domain_keys[3], DnsStatus.MATCH))
    steps = plan_advance(POLICY, domain_keys, published, now=NOW, overlap=0)
    for step in steps:
        domain_keys = _apply(domain_keys, step)
        assert _signing(domain_keys, RSA), f"no RSA key signs after {step.line()}"
        assert _signing(domain_keys, ED), f"no Ed25519 key signs after {step.line()}"
