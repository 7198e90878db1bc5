"""The On-* outcome of a message is chosen from typed results, never from their wording."""

from __future__ import annotations

import dataclasses

import pytest

from ldapdkim import config
from ldapdkim.model import DkimResult, Failure, Outcome, VerifyResult
from ldapdkim.signing.policy import verification_outcome


def _result(result: DkimResult, failure: Failure, reason: str = "") -> VerifyResult:
    return VerifyResult(result, "example.com", "s1", "rsa-sha256", reason, failure=failure)


@pytest.mark.parametrize(
    ("failure", "outcome"),
    [
        (Failure.DNS_ERROR, Outcome.DNS_ERROR),
        (Failure.NO_KEY, Outcome.KEY_NOT_FOUND),
        (Failure.KEY_UNUSABLE, Outcome.BAD_SIGNATURE),
        (Failure.SYNTAX, Outcome.BAD_SIGNATURE),
        (Failure.BODY_HASH, Outcome.BAD_SIGNATURE),
        (Failure.BAD_SIGNATURE, Outcome.BAD_SIGNATURE),
        (Failure.ALGORITHM, Outcome.BAD_SIGNATURE),
        (Failure.EXPIRED, Outcome.BAD_SIGNATURE),
        (Failure.PARTIAL_BODY, Outcome.BAD_SIGNATURE),
        (Failure.UNSIGNED_FROM, Outcome.BAD_SIGNATURE),
    ],
)
def test_each_failure_kind_has_its_on_outcome(failure: Failure, outcome: Outcome) -> None:
    assert verification_outcome([_result(DkimResult.PERMERROR, failure)]) is outcome


def test_every_failure_kind_is_placed() -> None:
    placed = {
        verification_outcome([_result(DkimResult.FAIL, failure)])
        for failure in Failure
        if failure is not Failure.NONE
    }
    assert placed <= {Outcome.DNS_ERROR, Outcome.KEY_NOT_FOUND, Outcome.BAD_SIGNATURE}


def test_a_failing_signature_of_a_testing_domain_counts_as_none() -> None:
    """RFC 6376 §3.6.1 t=y: not treated differently from unsigned mail."""
    testing = dataclasses.replace(_result(DkimResult.FAIL, Failure.BODY_HASH), testing=True)
    assert verification_outcome([testing]) is Outcome.NO_SIGNATURE


def test_a_reworded_reason_changes_nothing() -> None:
    missing = _result(DkimResult.PERMERROR, Failure.NO_KEY, "no key record at s1._domainkey")
    reworded = dataclasses.replace(missing, reason="the selector has no TXT record")
    looks_missing = _result(DkimResult.FAIL, Failure.BAD_SIGNATURE, "no key record, it seems")
    assert verification_outcome([reworded]) is Outcome.KEY_NOT_FOUND
    assert verification_outcome([looks_missing]) is Outcome.BAD_SIGNATURE


def test_one_pass_accepts_and_no_signature_is_its_own_outcome() -> None:
    good = _result(DkimResult.PASS, Failure.NONE)
    bad = _result(DkimResult.FAIL, Failure.BODY_HASH)
    assert verification_outcome([bad, good]) is None
    assert verification_outcome([]) is Outcome.NO_SIGNATURE


def test_a_dns_error_outweighs_a_missing_key() -> None:
    """A temporary failure may pass later: the MTA should be told to try again."""
    results = [
        _result(DkimResult.PERMERROR, Failure.NO_KEY),
        _result(DkimResult.TEMPERROR, Failure.DNS_ERROR),
    ]
    assert verification_outcome(results) is Outcome.DNS_ERROR


def test_every_on_keyword_is_one_outcome_and_every_outcome_has_its_keyword() -> None:
    keywords = [name for name, _, _ in config.keyword_reference() if name.startswith("On-")]
    assert sorted(keywords) == sorted(outcome.keyword for outcome in Outcome)
    assert {Outcome.parse(keyword) for keyword in keywords} == set(Outcome)
    assert set(config.Settings().on_actions) == set(Outcome)
