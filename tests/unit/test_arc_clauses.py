"""ARC verification, clause by clause (RFC 8617 §4 and §5.2).

Each test names its clause; ``tests/data/rfc8617-clauses.tsv`` maps every
clause to the test that shows it.  Chains are made by ``harness.arcforge``,
whose hashing is dkimpy's, so the verifier is not checked against our sealer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from harness.arcforge import (
    KEY_NAME,
    Chain,
    add_set,
    forge_chain,
    keys,
)
from harness.forge import ed25519_key, rsa_key, rsa_public_record

from ldapdkim.errors import DnsTemporaryError
from ldapdkim.signing.arc import ArcVerdict, ChainValidation, verify_chain
from ldapdkim.signing.arc.verdict import MAX_INSTANCES

NOW = 1796644800
KINDS = ("ARC-Authentication-Results", "ARC-Message-Signature", "ARC-Seal")
PASS, FAIL, NONE = ChainValidation.PASS, ChainValidation.FAIL, ChainValidation.NONE


def check(chain: Chain, lookup: Callable[[str], Sequence[bytes]] | None = None) -> ArcVerdict:
    return verify_chain(chain.headers, chain.body, lookup or keys(), timeout=2, now=NOW)


def replaced(chain: Chain, index: int, value: bytes) -> Chain:
    headers = list(chain.headers)
    headers[index] = (headers[index][0], value)
    return Chain(headers, chain.body)


def without(chain: Chain, index: int) -> Chain:
    return Chain([h for i, h in enumerate(chain.headers) if i != index], chain.body)


def tweak_of(instance: int, kind: str, old: str, new: str) -> Callable[[int, str, str], str]:
    def tweak(i: int, k: str, text: str) -> str:
        return text.replace(old, new) if (i, k) == (instance, kind) else text

    return tweak


# -- §5.2 step 1: no chain ---------------------------------------------------------


def test_5_2_a_message_without_arc_fields_is_none_and_asks_nothing() -> None:
    asked: list[str] = []

    def lookup(name: str) -> Sequence[bytes]:
        asked.append(name)
        return []

    plain = forge_chain(0)
    verdict = verify_chain(plain.headers, plain.body, lookup, timeout=1)
    assert (verdict.cv, verdict.instances, verdict.oldest_pass, asked) == (NONE, 0, 0, [])


def test_5_2_valid_chains_of_one_and_three_sets_pass_with_rsa_and_ed25519() -> None:
    for key in (rsa_key(), ed25519_key()):
        for sets in (1, 3):
            verdict = check(forge_chain(sets, key), keys(key))
            assert (verdict.cv, verdict.instances, verdict.oldest_pass) == (PASS, sets, 0)
            assert (verdict.sealer, verdict.at_limit, verdict.reason) == ("example.org", False, "")


# -- §4.2.1 instances --------------------------------------------------------------


def test_4_2_1_a_chain_of_50_sets_passes_and_is_at_the_limit() -> None:
    verdict = check(forge_chain(MAX_INSTANCES))
    assert (verdict.cv, verdict.instances, verdict.at_limit) == (PASS, 50, True)


def test_4_2_1_an_instance_beyond_50_fails_the_chain() -> None:
    chain = forge_chain(1)
    for old, new in (("i=1;", "i=51;"), ("i=1;", "i=99;")):
        tweak = lambda i, k, t, o=old, n=new: t.replace(o, n)  # noqa: E731
        verdict = check(forge_chain(1, tweak=tweak))
        assert verdict.cv is FAIL and "outside 1..50" in verdict.reason
        assert verdict.at_limit
    assert check(chain).cv is PASS


def test_4_2_1_the_instance_tag_is_1_to_50_written_in_one_or_two_digits() -> None:
    for bad in ("i=0;", "i=001;", "i=-1;", "i=one;", "i=1.0;", "i=;"):
        tweak = lambda i, k, t, b=bad: t.replace("i=1;", b)  # noqa: E731
        verdict = check(forge_chain(1, tweak=tweak))
        assert verdict.cv is FAIL, bad
    two_digits = lambda i, k, t: t.replace("i=1;", "i=01;")  # noqa: E731
    assert check(forge_chain(1, tweak=two_digits)).cv is PASS  # 1*2DIGIT


def test_4_1_1_the_aar_instance_comes_first_in_its_value() -> None:
    late = tweak_of(1, "aar", "i=1; mx.example.org;", "mx.example.org; i=1;")
    verdict = check(forge_chain(1, tweak=late))
    assert verdict.cv is FAIL and "ARC-Authentication-Results" in verdict.reason
    spaced = tweak_of(1, "aar", "i=1;", "i = 1 ;")
    assert check(forge_chain(1, tweak=spaced)).cv is PASS


def test_4_1_the_i_tag_is_required_in_ams_and_seal() -> None:
    for kind in ("ams", "as"):
        verdict = check(forge_chain(1, tweak=tweak_of(1, kind, "i=1; ", "")))
        assert verdict.cv is FAIL and "no valid i=" in verdict.reason, kind


# -- §5.2 steps 2 to 4: structure ----------------------------------------------------


def test_5_2_a_set_missing_one_of_its_three_fields_fails() -> None:
    chain = forge_chain(2)
    for name in ("ARC-Authentication-Results", "ARC-Message-Signature", "ARC-Seal"):
        verdict = check(without(chain, chain.field(name, 1)))
        assert verdict.cv is FAIL and "has no" in verdict.reason, name


def test_5_2_a_set_with_a_field_twice_fails() -> None:
    chain = forge_chain(1)
    index = chain.field("ARC-Message-Signature", 1)
    doubled = Chain([chain.headers[index], *chain.headers], chain.body)
    verdict = check(doubled)
    assert verdict.cv is FAIL and "2 ARC-Message-Signature" in verdict.reason


def test_5_2_instances_form_1_to_n_without_a_gap() -> None:
    chain = forge_chain(3)
    second = {chain.field(name, 2) for name in KINDS}
    gap = [h for i, h in enumerate(chain.headers) if i not in second]
    verdict = check(Chain(gap, chain.body))
    assert verdict.cv is FAIL and "instance 2 is missing" in verdict.reason
    assert verdict.instances == 3  # a new set would be 4, above every set there


def test_5_2_cv_none_only_at_instance_1() -> None:
    verdict = check(forge_chain(1, tweak=tweak_of(1, "as", "cv=none", "cv=pass")))
    assert verdict.cv is FAIL and "cv=pass, not none" in verdict.reason
    verdict = check(forge_chain(2, tweak=tweak_of(2, "as", "cv=pass", "cv=none")))
    assert verdict.cv is FAIL and "cv=none, not pass" in verdict.reason


def test_5_2_cv_fail_in_any_seal_fails_the_chain() -> None:
    newest = forge_chain(2, tweak=tweak_of(2, "as", "cv=pass", "cv=fail"))
    verdict = check(newest)
    assert verdict.cv is FAIL and "instance 2 says cv=fail" in verdict.reason
    older = forge_chain(3, tweak=tweak_of(2, "as", "cv=pass", "cv=fail"))
    verdict = check(older)
    assert verdict.cv is FAIL and "cv=fail" in verdict.reason


def test_5_2_an_unknown_cv_value_fails() -> None:
    verdict = check(forge_chain(2, tweak=tweak_of(2, "as", "cv=pass", "cv=maybe")))
    assert verdict.cv is FAIL


def test_4_1_3_an_arc_seal_with_h_is_refused() -> None:
    with_h = tweak_of(1, "as", "cv=none;", "cv=none; h=from;")
    verdict = check(forge_chain(1, tweak=with_h))
    assert verdict.cv is FAIL and "h= tag" in verdict.reason


def test_5_2_field_names_match_case_insensitively() -> None:
    chain = forge_chain(1)
    headers = [(n.upper(), v) for n, v in chain.headers]
    assert check(Chain(headers, chain.body)).cv is PASS


# -- §5.2 step 5: the newest AMS ------------------------------------------------------


def test_5_2_a_changed_body_fails_the_newest_ams() -> None:
    chain = forge_chain(2)
    verdict = check(Chain(chain.headers, chain.body + b"appended\r\n"))
    assert verdict.cv is FAIL and "ARC-Message-Signature of instance 2: body hash" in verdict.reason


def test_5_2_a_changed_signed_header_fails_the_newest_ams() -> None:
    chain = forge_chain(1)
    index = next(i for i, (n, _) in enumerate(chain.headers) if n == b"Subject")
    verdict = check(replaced(chain, index, b" changed\r\n"))
    assert verdict.cv is FAIL and "did not verify" in verdict.reason


def test_4_1_2_an_ams_must_not_sign_arc_seal() -> None:
    tweak = tweak_of(1, "ams", "h=from:to", "h=arc-seal:from:to")
    verdict = check(forge_chain(1, tweak=tweak))
    assert verdict.cv is FAIL and "ARC-Seal" in verdict.reason


def test_4_1_2_an_ams_is_a_dkim_signature_the_tag_rules_apply() -> None:
    """Unknown tags are ignored; a tag given twice, a missing required tag, x= in the past,
    an h= without From: the AMS does not verify (RFC 6376 §3.2, §3.5 via §4.1.2)."""
    assert check(forge_chain(1, tweak=tweak_of(1, "ams", "t=", "zz=note; t="))).cv is PASS
    assert check(forge_chain(1, tweak=tweak_of(1, "as", "t=", "zz=note; t="))).cv is PASS
    for old, new in (
        ("d=example.org;", "d=example.org; d=example.org;"),
        ("bh=", "x=1; bh="),
        ("h=from:", "h="),
        ("s=arc; ", ""),
    ):
        verdict = check(forge_chain(1, tweak=tweak_of(1, "ams", old, new)))
        assert verdict.cv is FAIL, new


# -- §5.2 step 6: oldest-pass ---------------------------------------------------------


def test_5_2_oldest_pass_is_the_oldest_instance_whose_ams_still_verifies() -> None:
    key = ed25519_key()
    first = forge_chain(2, key)
    edited = Chain(first.headers, first.body + b"footer of the list\r\n")
    chain = add_set(edited, key, 3)
    verdict = check(chain)
    assert (verdict.cv, verdict.instances, verdict.oldest_pass) == (PASS, 3, 3)
    assert check(forge_chain(3, key)).oldest_pass == 0


def test_5_2_an_older_ams_that_fails_does_not_fail_the_chain() -> None:
    key = ed25519_key()
    chain = forge_chain(1, key)
    index = next(i for i, (n, _) in enumerate(chain.headers) if n == b"Subject")
    chain = add_set(replaced(chain, index, b" [list] a test\r\n"), key, 2)
    verdict = check(chain)
    assert (verdict.cv, verdict.oldest_pass) == (PASS, 2)


# -- §5.2 step 7: the seals -----------------------------------------------------------


def test_5_2_a_changed_aar_fails_the_seals() -> None:
    chain = forge_chain(2)
    index = chain.field("ARC-Authentication-Results", 1)
    forged = replaced(chain, index, b" i=1; mx.example.org; dkim=pass header.d=evil.example\r\n")
    verdict = check(forged)
    assert verdict.cv is FAIL and "ARC-Seal of instance 2" in verdict.reason


def test_5_2_a_seal_that_covers_too_little_fails() -> None:
    key = ed25519_key()
    chain = forge_chain(1, key)
    own_set_only = add_set(chain, key, 2, seal_scope=[])
    verdict = check(own_set_only)
    assert verdict.cv is FAIL and "ARC-Seal of instance 2: the signature" in verdict.reason


def test_5_1_1_the_seal_is_canonicalized_relaxed() -> None:
    chain = forge_chain(1)
    index = chain.field("ARC-Authentication-Results", 1)
    name, value = chain.headers[index]
    refolded = value.replace(b"; ", b";\r\n\t  ")
    headers = list(chain.headers)
    headers[index] = (name.lower(), refolded)
    assert check(Chain(headers, chain.body)).cv is PASS


# -- algorithms and keys ------------------------------------------------------------


def test_4_1_rsa_sha1_is_refused_in_ams_and_seal() -> None:
    for kind in ("ams", "as"):
        chain = forge_chain(1, rsa_key(), tweak=tweak_of(1, kind, "a=rsa-sha256", "a=rsa-sha1"))
        verdict = check(chain, keys(rsa_key()))
        assert verdict.cv is FAIL and "rsa-sha1" in verdict.reason, kind


def test_4_1_an_unknown_algorithm_fails() -> None:
    chain = forge_chain(1, rsa_key(), tweak=tweak_of(1, "as", "a=rsa-sha256", "a=rsa-sha512"))
    verdict = check(chain, keys(rsa_key()))
    assert verdict.cv is FAIL and "unknown algorithm" in verdict.reason


def test_4_1_a_key_of_the_wrong_type_fails() -> None:
    verdict = check(forge_chain(1, ed25519_key()), keys(rsa_key()))
    assert verdict.cv is FAIL and "k=rsa" in verdict.reason


def test_8301_rsa_keys_below_1024_bits_and_below_the_minimum_fail() -> None:
    small = rsa_key(512)
    verdict = check(forge_chain(1, small), keys(small))
    assert verdict.cv is FAIL and "512 bits" in verdict.reason
    key = rsa_key()
    chain = forge_chain(1, key)
    strict = verify_chain(chain.headers, chain.body, keys(key), timeout=2, minimum_key_bits=3072)
    assert strict.cv is FAIL and "MinimumKeyBits" in strict.reason
    huge = lambda name: [rsa_public_record(16384)]  # noqa: E731
    assert check(forge_chain(1, key), huge).cv is FAIL


def test_key_record_errors_fail_the_chain() -> None:
    key = ed25519_key()
    chain = forge_chain(1, key)
    assert "no key record" in check(chain, lambda name: []).reason
    revoked = check(chain, keys(key, "v=DKIM1; k=ed25519; p="))
    assert revoked.cv is FAIL and "revoked" in revoked.reason
    malformed = check(chain, keys(key, "v=DKIM1; k=ed25519; p={p}; p={p}"))
    assert malformed.cv is FAIL and "malformed" in malformed.reason
    not_email = check(chain, keys(key, "v=DKIM1; k={k}; s=other; p={p}"))
    assert not_email.cv is FAIL and "not for email" in not_email.reason


def test_a_temporary_key_lookup_failure_fails_and_says_it_is_temporary() -> None:
    """RFC 8617 results are none, pass and fail: no temperror; the verdict tells it apart."""

    def lookup(name: str) -> Sequence[bytes]:
        raise DnsTemporaryError(f"DNS query for {name} timed out")

    verdict = check(forge_chain(2), lookup)
    assert (verdict.cv, verdict.temporary) == (FAIL, True)
    assert KEY_NAME in verdict.reason
    assert check(forge_chain(2), lambda name: []).temporary is False


def test_the_verdict_names_the_newest_sealer_even_when_the_chain_fails() -> None:
    chain = forge_chain(2)
    verdict = check(Chain(chain.headers, chain.body + b"x\r\n"))
    assert (verdict.cv, verdict.sealer, verdict.instances) == (FAIL, "example.org", 2)


@pytest.mark.parametrize("position", ["top", "bottom"])
def test_5_2_hostile_values_never_raise(position: str) -> None:
    chain = forge_chain(2)
    junk = [
        (b"ARC-Seal", b" i=1; cv=none; a=rsa-sha256; b=\xff\x00; d=\xe9.org; s=s\r\n"),
        (b"ARC-Message-Signature", b" \r\n"),
        (b"ARC-Authentication-Results", b"\xff\xfe i=2;\r\n"),
        (b"arc-seal", b" " + b";" * 5000 + b"\r\n"),
    ]
    headers = [*junk, *chain.headers] if position == "top" else [*chain.headers, *junk]
    verdict = check(Chain(headers, chain.body))
    assert verdict.cv is FAIL and verdict.reason
