"""The signing refusals table: one row per reason a message to sign is not signed."""

from __future__ import annotations

from logging import ERROR, INFO, WARNING

import pytest

from ldapdkim import metrics
from ldapdkim.errors import (
    SIGNING_REFUSALS,
    AmbiguousDomain,
    DirectoryStale,
    DirectoryUnavailable,
    DomainNotFound,
    DomainNotSigned,
    InvalidDomain,
    KeyUnavailable,
    MessageError,
    SenderMismatch,
)
from ldapdkim.milter import refusals
from ldapdkim.model import (
    Algorithm,
    DomainPolicy,
    KeyState,
    NotSignedReason,
    Outcome,
    Resolution,
    SigningKey,
)

R = NotSignedReason

ROWS = [
    # cause: what the session hands the table (the reason itself where no exception tells it)
    (DomainNotSigned("example.com is switched off"), R.DOMAIN_NOT_SIGNED, WARNING, None, ""),
    (R.NO_ACTIVE_KEY, R.NO_ACTIVE_KEY, INFO, None, ""),
    (MessageError("no From header field"), R.NO_AUTHOR_DOMAIN, WARNING, None, ""),
    (
        DirectoryUnavailable("cannot reach ldap://127.0.0.1:9"),
        R.DIRECTORY_UNAVAILABLE,
        ERROR,
        Outcome.DIRECTORY_ERROR,
        "directory unavailable",
    ),
    (
        AmbiguousDomain("two policy entries claim example.com"),
        R.DIRECTORY_INCONSISTENT,
        ERROR,
        Outcome.SIGNATURE_ERROR,
        "signing data is inconsistent",
    ),
    (R.KEY_UNUSABLE, R.KEY_UNUSABLE, ERROR, Outcome.SIGNATURE_ERROR, "no usable signing key"),
    (
        KeyUnavailable("sealed with KEK 'kek1', which this host does not have"),
        R.KEY_UNAVAILABLE,
        ERROR,
        Outcome.SIGNATURE_ERROR,
        "signing key unavailable",
    ),
    (
        KeyUnavailable("the token is not present", in_token=True),
        R.TOKEN_UNAVAILABLE,
        ERROR,
        Outcome.INTERNAL_ERROR,  # the token may come back
        "signing token unavailable",
    ),
    (
        R.MESSAGE_UNSIGNABLE,
        R.MESSAGE_UNSIGNABLE,
        ERROR,
        Outcome.SIGNATURE_ERROR,
        "message cannot be signed",
    ),
    (
        SenderMismatch("login 'alice' may not send as bob@b.example"),
        R.SENDER_MISMATCH,
        WARNING,
        Outcome.SENDER_MISMATCH,
        "sender may not sign as From",
    ),
]


@pytest.mark.parametrize(
    ("cause", "reason", "level", "outcome", "text"), ROWS, ids=[row[1].value for row in ROWS]
)
def test_each_refusal_has_its_reason_log_level_outcome_and_smtp_text(
    cause: Exception | NotSignedReason,
    reason: NotSignedReason,
    level: int,
    outcome: Outcome | None,
    text: str,
) -> None:
    refusal = refusals.refusal_for(cause)
    assert (refusal.reason, refusal.level, refusal.outcome, refusal.text) == (
        reason,
        level,
        outcome,
        text,
    )
    assert refusals.refusal_for(reason) == refusals.TABLE[reason]


def test_every_reason_has_a_row_here_and_in_the_table() -> None:
    assert [row[1] for row in ROWS] == list(NotSignedReason)
    assert set(refusals.TABLE) == set(NotSignedReason)


def test_the_metric_counts_exactly_the_reasons() -> None:
    [family] = metrics.MESSAGES_NOT_SIGNED.collect()
    labels = {s.labels["reason"] for s in family.samples if s.name.endswith("_total")}
    assert labels == {reason.value for reason in NotSignedReason}


def test_the_reason_labels_never_change() -> None:
    """Dashboards and alerts select on these values."""
    assert [reason.value for reason in NotSignedReason] == [
        "domain_not_signed",
        "no_active_key",
        "no_author_domain",
        "directory_unavailable",
        "directory_inconsistent",
        "key_unusable",
        "key_unavailable",
        "token_unavailable",
        "message_unsignable",
        "sender_mismatch",
    ]


def test_a_domain_no_policy_covers_is_logged_only_with_log_why() -> None:
    """Most mail an internal host sends for a domain not ours: INFO, not WARNING."""
    refusal = refusals.refusal_for(DomainNotFound("no policy entry covers example.org"))
    assert (refusal.reason, refusal.level) == (R.DOMAIN_NOT_SIGNED, INFO)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (DirectoryStale("the replica is 2 h old"), R.DIRECTORY_UNAVAILABLE),
        (InvalidDomain("'*)(x' is not a host name"), R.NO_AUTHOR_DOMAIN),
    ],
    ids=["stale-replica", "invalid-domain"],
)
def test_subclasses_and_kin_take_their_family_reason(
    error: Exception, reason: NotSignedReason
) -> None:
    assert refusals.reason_of(error) is reason


def test_every_signing_refusal_exception_has_a_reason() -> None:
    for kind in SIGNING_REFUSALS:
        assert refusals.reason_of(kind("x")) in NotSignedReason


def test_an_exception_that_is_no_refusal_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="ValueError is no signing refusal"):
        refusals.reason_of(ValueError("x"))


def _resolution(*keys: SigningKey) -> Resolution:
    policy = DomainPolicy("dc=example.com,ou=domains", ("example.com",))
    return Resolution("mail.example.com", "example.com", policy, keys)


def _key(state: KeyState, problem: str | None = None) -> SigningKey:
    return SigningKey("dkimSignSelector=r1", "r1", Algorithm.RSA_SHA256, state, problem=problem)


def test_an_active_key_the_directory_marks_unusable_is_an_error() -> None:
    resolution = _resolution(_key(KeyState.RETIRED), _key(KeyState.ACTIVE, "not a PEM key"))
    assert refusals.keyless(resolution) == (
        R.KEY_UNUSABLE,
        "no usable key for example.com: not a PEM key",
    )


def test_no_active_key_is_normal_between_keys() -> None:
    resolution = _resolution(_key(KeyState.PENDING), _key(KeyState.REVOKED, "revoked"))
    assert refusals.keyless(resolution) == (R.NO_ACTIVE_KEY, "no active key for example.com")
