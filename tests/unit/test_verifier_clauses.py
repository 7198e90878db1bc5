"""The verifier, clause by clause (RFC 6376 §3.2 to §3.7 and §6, RFC 8463, RFC 8301).

Each test names its clause; ``tests/data/rfc-clauses.tsv`` maps every clause
to the test that shows it.  Signatures are made by ``harness.forge``, whose
hashing is dkimpy's, so the verifier is not checked against itself.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from harness.forge import (
    BODY,
    HEADERS,
    Forged,
    body_hash,
    ed25519_key,
    forge,
    key_record,
    rsa_key,
    rsa_public_record,
)

from ldapdkim.errors import DnsTemporaryError
from ldapdkim.model import DkimResult, Failure, Header, VerifyResult
from ldapdkim.signing import authresults
from ldapdkim.signing.verifier import verify

NAME = "s1._domainkey.example.com"
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
BASE = "v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=s1; h=from:to:subject; bh=@; b="


def dns(*records: bytes, name: str = NAME) -> Callable[[str], Sequence[bytes]]:
    table = {name: list(records)}
    return lambda asked: table.get(asked, [])


def check(
    forged: Forged, lookup: Callable[[str], Sequence[bytes]], **options: object
) -> VerifyResult:
    [result] = verify(forged.headers, forged.body, lookup, now=NOW, **options)  # type: ignore[arg-type]
    return result


def rsa_dns(tags: str = "v=DKIM1; k={k}; p={p}") -> Callable[[str], Sequence[bytes]]:
    return dns(key_record(rsa_key(), tags))


def outcome(
    tags: str, record_tags: str = "v=DKIM1; k={k}; p={p}", **forge_options: object
) -> VerifyResult:
    return check(forge(tags, rsa_key(), **forge_options), rsa_dns(record_tags))  # type: ignore[arg-type]


def test_a_well_formed_rsa_sha256_signature_passes() -> None:
    assert outcome(BASE).result is DkimResult.PASS


# -- §3.2 tag lists -------------------------------------------------------------------


def test_3_2_a_tag_given_twice_invalidates_the_signature() -> None:
    result = outcome(BASE.replace("s=s1;", "s=s1; s=s1;"))
    assert (result.result, result.failure) == (DkimResult.PERMERROR, Failure.SYNTAX)
    assert "given twice" in result.reason


def test_3_2_unknown_tags_are_ignored() -> None:
    assert (
        outcome(BASE.replace("s=s1;", "s=s1; zz=unknown value; x_1=2;")).result is DkimResult.PASS
    )


def test_3_2_whitespace_and_folding_around_tags_and_values_are_accepted() -> None:
    folded = (
        "v = 1 ;\r\n\ta=rsa-sha256;  c=relaxed/relaxed; d=\r\n example.com; s=s1;\r\n"
        " h=from :\r\n\tto:subject; bh=@; b="
    )
    assert outcome(folded).result is DkimResult.PASS


def test_3_2_unknown_tags_are_ignored_however_their_names_are_spelt() -> None:
    """An unknown tag is ignored once it has a name and '=' (as at Mail::DKIM and OpenDKIM);
    its value still holds only what a header field's tag value may (C06)."""
    tags = BASE.replace("s=s1;", "s=s1; x-note=from a list; 9z=1; x.y = z;")
    assert outcome(tags).result is DkimResult.PASS
    assert outcome(BASE.replace("s=s1;", "s=s1; x-note=a\x01b;")).result is DkimResult.PERMERROR


def test_3_2_runs_of_blanks_and_folds_between_the_words_of_a_value_are_accepted() -> None:
    """tag-value = [ tval *( 1*(WSP / FWS) tval ) ]: several folds in a row are one gap."""
    tags = BASE.replace("s=s1;", "s=s1; zz=one \r\n \r\n\ttwo;").replace(
        "h=from:to", "h=from \r\n\t \r\n :to"
    )
    assert outcome(tags).result is DkimResult.PASS


def test_3_2_tag_names_are_case_sensitive() -> None:
    result = outcome(BASE.replace("v=1", "V=1"))
    assert result.result is DkimResult.PERMERROR and "lacks v=" in result.reason


def test_3_2_values_defined_as_abnf_literals_match_case_insensitively() -> None:
    """a=, c= and q= values are ABNF literals (RFC 5234 §2.3); d= and s= are DNS names."""
    upper = BASE.replace("a=rsa-sha256", "a=RSA-SHA256").replace(
        "relaxed/relaxed", "Relaxed/RELAXED"
    )
    assert outcome(upper.replace("d=example.com", "d=EXAMPLE.com")).result is DkimResult.PASS
    assert outcome(BASE.replace("a=rsa-sha256", "a=rsa-sha512")).failure is Failure.ALGORITHM


def test_3_2_a_value_with_a_semicolon_or_control_character_is_no_tag_list() -> None:
    assert outcome(BASE.replace("s=s1;", "s=s1; n=a\x01b;")).result is DkimResult.PERMERROR


# -- §3.3 algorithms, RFC 8301, RFC 8463 ------------------------------------------------


def test_8301_rsa_sha1_is_not_valid() -> None:
    result = outcome(BASE.replace("rsa-sha256", "rsa-sha1"))
    assert (result.result, result.failure) == (DkimResult.PERMERROR, Failure.ALGORITHM)


def test_8301_rsa_keys_below_1024_bits_are_not_valid() -> None:
    small = rsa_key(768)
    result = check(forge(BASE, small), dns(key_record(small)), minimum_key_bits=512)
    assert result.result is DkimResult.PASS  # MinimumKeyBits lowered: the key itself is fine
    result = check(forge(BASE, small), dns(key_record(small)))
    assert (result.result, result.failure) == (DkimResult.PERMERROR, Failure.KEY_UNUSABLE)


def test_8301_keys_from_1024_to_4096_bits_verify() -> None:
    for bits in (1024, 4096):
        key = rsa_key(bits)
        assert check(forge(BASE, key), dns(key_record(key))).result is DkimResult.PASS


def test_keys_above_8192_bits_are_refused_unused() -> None:
    result = check(forge(BASE, rsa_key()), dns(rsa_public_record(8200)))
    assert result.failure is Failure.KEY_UNUSABLE and "more than 8192" in result.reason


def test_8463_ed25519_signs_the_sha256_of_the_header_data() -> None:
    tags = BASE.replace("rsa-sha256", "ed25519-sha256")
    result = check(forge(tags, ed25519_key()), dns(key_record(ed25519_key())))
    assert result.result is DkimResult.PASS


def test_8463_an_ed25519_key_is_32_octets() -> None:
    tags = BASE.replace("rsa-sha256", "ed25519-sha256")
    result = check(forge(tags, ed25519_key()), dns(b"v=DKIM1; k=ed25519; p=AAAA"))
    assert result.failure is Failure.KEY_UNUSABLE and "32-octet" in result.reason


# -- §3.4 canonicalization -------------------------------------------------------------


@pytest.mark.parametrize(
    "canon", ["simple/simple", "simple/relaxed", "relaxed/simple", "relaxed/relaxed"]
)
def test_3_4_every_canonicalization_pair_verifies(canon: str) -> None:
    tags = BASE.replace("c=relaxed/relaxed", f"c={canon}")
    assert outcome(tags, canon=canon).result is DkimResult.PASS


def test_3_4_1_simple_header_canonicalization_keeps_whitespace_significant() -> None:
    forged = forge(
        BASE.replace("relaxed/relaxed", "simple/simple"), rsa_key(), canon="simple/simple"
    )
    spaced = Forged([(n, v.replace(b"a test", b"a  test")) for n, v in forged.headers], forged.body)
    assert check(spaced, rsa_dns()).failure is Failure.BAD_SIGNATURE


def test_3_4_2_relaxed_header_canonicalization_ignores_case_and_whitespace() -> None:
    forged = forge(BASE, rsa_key())
    changed = Forged(
        [
            (n.upper() if n != b"DKIM-Signature" else n, v.replace(b"a test", b" a \t test  "))
            for n, v in forged.headers
        ],
        forged.body,
    )
    assert check(changed, rsa_dns()).result is DkimResult.PASS


def test_3_4_3_simple_body_ignores_trailing_empty_lines() -> None:
    tags = BASE.replace("relaxed/relaxed", "relaxed/simple")
    forged = forge(tags, rsa_key(), canon="relaxed/simple")
    longer = Forged(forged.headers, forged.body + b"\r\n\r\n")
    assert check(longer, rsa_dns()).result is DkimResult.PASS
    spaced = Forged(forged.headers, forged.body.replace(b"Bob,", b"Bob, "))
    assert check(spaced, rsa_dns()).failure is Failure.BODY_HASH


def test_3_4_4_relaxed_body_ignores_whitespace_changes() -> None:
    forged = forge(BASE, rsa_key())
    spaced = Forged(forged.headers, forged.body.replace(b"the figures.", b"the   figures.\t"))
    assert check(spaced, rsa_dns()).result is DkimResult.PASS


@pytest.mark.parametrize("body", [b"", b"\r\n\r\n\r\n", b"a \t\r\nb\r", b"line\nbare lf\n"])
@pytest.mark.parametrize("canon", ["simple", "relaxed"])
def test_3_4_body_edge_cases_verify(body: bytes, canon: str) -> None:
    tags = BASE.replace("c=relaxed/relaxed", f"c=relaxed/{canon}")
    assert outcome(tags, body=body, canon=f"relaxed/{canon}").result is DkimResult.PASS


def test_3_4_header_bytes_of_8_bit_and_nul_are_hashed_as_they_are() -> None:
    headers = [*HEADERS[:2], (b"Subject", b" caf\xc3\xa9 \x00 x\r\n"), *HEADERS[3:]]
    assert outcome(BASE, headers=headers).result is DkimResult.PASS


# -- §3.5 signature tags ----------------------------------------------------------------


@pytest.mark.parametrize("tag", ["v", "a", "b", "bh", "d", "h", "s"])
def test_3_5_a_missing_required_tag_is_permerror(tag: str) -> None:
    parts = [p for p in BASE.split(";") if not p.strip().startswith(f"{tag}=")]
    text = ";".join(parts)
    if tag == "b":
        text += "; z=x"
    forged = forge(text if tag != "b" else BASE, rsa_key(), sign=["from", "to", "subject"])
    if tag == "b":  # drop b= after signing
        name, value = forged.headers[0]
        forged = Forged(
            [(name, value[: value.index(b" b=")] + b"\r\n"), *forged.headers[1:]], forged.body
        )
    result = check(forged, rsa_dns())
    assert result.result is DkimResult.PERMERROR


def test_3_5_v_must_be_1() -> None:
    assert outcome(BASE.replace("v=1", "v=2")).result is DkimResult.PERMERROR


def test_3_5_c_defaults_to_simple_simple_and_one_word_is_the_header() -> None:
    simple = BASE.replace("c=relaxed/relaxed; ", "")
    assert outcome(simple, canon="simple/simple").result is DkimResult.PASS
    one = BASE.replace("c=relaxed/relaxed", "c=relaxed")
    assert outcome(one, canon="relaxed/simple").result is DkimResult.PASS


def test_3_5_an_unknown_canonicalization_is_permerror() -> None:
    assert outcome(BASE.replace("relaxed/relaxed", "relaxed/fancy")).result is DkimResult.PERMERROR


def test_5_4_and_6_1_1_h_must_sign_from() -> None:
    result = outcome(BASE.replace("h=from:to:subject", "h=to:subject"))
    assert result.result is DkimResult.PERMERROR and "From" in result.reason


def test_5_4_2_fields_are_signed_bottom_up_and_an_absent_name_signs_nothing() -> None:
    headers = [*HEADERS, (b"Received", b" first\r\n"), (b"Received", b" second\r\n")]
    tags = BASE.replace("h=from:to:subject", "h=from:received:received:received:x-absent")
    forged = forge(tags, rsa_key(), headers=headers)
    assert check(forged, rsa_dns()).result is DkimResult.PASS
    swapped = [*HEADERS, (b"Received", b" second\r\n"), (b"Received", b" first\r\n")]
    assert (
        check(Forged([forged.headers[0], *swapped], forged.body), rsa_dns()).result
        is DkimResult.FAIL
    )


def test_5_4_2_oversigning_refuses_an_added_field() -> None:
    tags = BASE.replace("h=from:to:subject", "h=from:from:to:subject:subject")
    forged = forge(tags, rsa_key())
    assert check(forged, rsa_dns()).result is DkimResult.PASS
    added = Forged([*forged.headers, (b"Subject", b" second subject\r\n")], forged.body)
    assert check(added, rsa_dns()).failure is Failure.BAD_SIGNATURE


MALLORY = (b"From", b" Mallory <mallory@evil.test>\r\n")


def _with_from_above(forged: Forged, *added: Header) -> Forged:
    """``forged`` with From fields added between its signature and the signed header."""
    return Forged([forged.headers[0], *added, *forged.headers[1:]], forged.body)


def test_5_4_2_and_8_15_a_from_field_the_signature_does_not_cover_is_no_pass() -> None:
    """RFC 5322 §3.6 allows one From; h=from covers the bottom one (§5.4.2), and a From
    added above it leaves the signature intact while many readers show the added one."""
    forged = forge(BASE, rsa_key())
    result = check(_with_from_above(forged, MALLORY), rsa_dns())
    assert (result.result, result.failure) == (DkimResult.POLICY, Failure.UNSIGNED_FROM)
    assert "2 From fields and h= covers 1" in result.reason
    assert result.reason.isascii()  # it becomes an Authentication-Results comment
    header = authresults.build("mx.example.net", [result])
    assert "dkim=policy (the message has 2 From fields and h= covers 1;" in header


def test_5_4_2_a_third_from_field_is_no_pass_even_when_two_are_signed() -> None:
    two = [MALLORY, *HEADERS]
    forged = forge(BASE.replace("h=from:", "h=from:from:"), rsa_key(), headers=two)
    assert check(forged, rsa_dns()).result is DkimResult.PASS  # the signer vouched for both
    third = (b"From", b" Eve <eve@evil.test>\r\n")
    result = check(_with_from_above(forged, third), rsa_dns())
    assert (result.result, result.failure) == (DkimResult.POLICY, Failure.UNSIGNED_FROM)
    assert "3 From fields and h= covers 2" in result.reason


def test_5_4_2_a_message_without_a_from_field_is_no_pass() -> None:
    """h=from with no From field hashes nothing for it (§5.4.2): no author is signed."""
    forged = forge(BASE, rsa_key(), headers=HEADERS[1:])
    result = check(forged, rsa_dns())
    assert (result.result, result.failure) == (DkimResult.POLICY, Failure.UNSIGNED_FROM)
    assert "no From field" in result.reason


def test_5_4_2_a_from_field_added_below_breaks_the_signature_and_stays_a_failure() -> None:
    forged = forge(BASE, rsa_key())
    below = Forged([*forged.headers, MALLORY], forged.body)
    assert check(below, rsa_dns()).failure is Failure.BAD_SIGNATURE
    changed = _with_from_above(Forged(forged.headers, forged.body + b"more\r\n"), MALLORY)
    assert check(changed, rsa_dns()).failure is Failure.BODY_HASH


def test_3_5_i_is_d_or_below_it() -> None:
    assert (
        outcome(BASE.replace("s=s1;", "s=s1; i=alice@mail.example.com;")).result is DkimResult.PASS
    )
    outside = outcome(BASE.replace("s=s1;", "s=s1; i=alice@example.org;"))
    assert outside.result is DkimResult.PERMERROR and "outside d=" in outside.reason


def test_3_5_i_is_dkim_quoted_printable() -> None:
    result = outcome(BASE.replace("s=s1;", "s=s1; i=al=2Bice@example.com;"))
    assert result.result is DkimResult.PASS and result.identity == "al+ice@example.com"


def test_an_i_that_decodes_to_line_breaks_or_quotes_is_refused() -> None:
    """The identity goes into Authentication-Results: a decoded CRLF must not."""
    for local in ("a=0D=0Ab", "a=3Bb", "a=22b"):
        result = outcome(BASE.replace("s=s1;", f"s=s1; i={local}@example.com;"))
        assert result.result is DkimResult.PERMERROR and "dot-atom" in result.reason


def test_3_5_q_lists_methods_and_unknown_ones_are_ignored() -> None:
    assert outcome(BASE.replace("s=s1;", "s=s1; q=foo/bar:dns/txt;")).result is DkimResult.PASS
    assert outcome(BASE.replace("s=s1;", "s=s1; q=foo/bar;")).result is DkimResult.PERMERROR


def test_3_5_x_must_come_after_t_and_an_expired_signature_is_not_valid() -> None:
    now = int(NOW.timestamp())
    good = outcome(BASE.replace("s=s1;", f"s=s1; t={now - 10}; x={now + 3600};"))
    assert good.result is DkimResult.PASS
    before = outcome(BASE.replace("s=s1;", f"s=s1; t={now}; x={now - 100};"))
    assert before.result is DkimResult.PERMERROR and "not after t=" in before.reason
    expired = outcome(BASE.replace("s=s1;", f"s=s1; t={now - 7200}; x={now - 3600};"))
    assert expired.failure is Failure.EXPIRED


def test_3_5_l_covers_a_prefix_and_content_after_it_is_not_a_pass() -> None:
    tags = BASE.replace("s=s1;", f"s=s1; l={len(BODY)};")
    forged = forge(tags, rsa_key())
    assert check(forged, rsa_dns()).result is DkimResult.PASS
    appended = Forged(forged.headers, forged.body + b"Click https://evil.example/\r\n")
    result = check(appended, rsa_dns())
    assert (result.result, result.failure) == (DkimResult.POLICY, Failure.PARTIAL_BODY)
    assert "unsigned" in result.reason


def test_3_5_l_beyond_the_body_is_permerror() -> None:
    tags = BASE.replace("s=s1;", "s=s1; l=999999;")
    forged = forge(tags.replace("bh=@", f"bh={body_hash(BODY, 'relaxed')}"), rsa_key())
    assert check(forged, rsa_dns()).result is DkimResult.PERMERROR


# -- §3.6 key records -----------------------------------------------------------------


def test_3_6_1_a_record_of_another_version_is_discarded() -> None:
    assert outcome(BASE, "k={k}; p={p}").result is DkimResult.PASS  # v= is optional
    assert outcome(BASE, "k={k}; v=DKIM1; p={p}").result is DkimResult.PASS  # as the others do
    assert outcome(BASE, "v=DKIM2; k={k}; p={p}").failure is Failure.KEY_UNUSABLE


def test_3_6_1_h_lists_the_hashes_the_key_may_sign_with() -> None:
    assert outcome(BASE, "v=DKIM1; h=sha1:sha256; k={k}; p={p}").result is DkimResult.PASS
    assert outcome(BASE, "v=DKIM1; h=sha1; k={k}; p={p}").failure is Failure.KEY_UNUSABLE


def test_3_6_1_k_must_match_the_signature_algorithm() -> None:
    assert outcome(BASE, "v=DKIM1; k=ed25519; p={p}").failure is Failure.KEY_UNUSABLE
    assert outcome(BASE, "v=DKIM1; k=dsa; p={p}").failure is Failure.KEY_UNUSABLE
    assert outcome(BASE, "v=DKIM1; p={p}").result is DkimResult.PASS  # k defaults to rsa


def test_3_6_1_an_empty_p_is_a_revoked_key() -> None:
    result = outcome(BASE, "v=DKIM1; k=rsa; p=")
    assert result.failure is Failure.KEY_UNUSABLE and "revoked" in result.reason


def test_3_6_1_s_limits_the_services_the_key_is_for() -> None:
    assert outcome(BASE, "v=DKIM1; k={k}; s=email:other; p={p}").result is DkimResult.PASS
    assert outcome(BASE, "v=DKIM1; k={k}; s=*; p={p}").result is DkimResult.PASS
    assert outcome(BASE, "v=DKIM1; k={k}; s=other; p={p}").failure is Failure.KEY_UNUSABLE


def test_3_6_1_t_s_requires_i_in_d_itself() -> None:
    sub = BASE.replace("s=s1;", "s=s1; i=alice@mail.example.com;")
    assert outcome(sub, "v=DKIM1; k={k}; t=s; p={p}").failure is Failure.KEY_UNUSABLE
    same = BASE.replace("s=s1;", "s=s1; i=alice@example.com;")
    assert outcome(same, "v=DKIM1; k={k}; t=s; p={p}").result is DkimResult.PASS


def test_3_6_1_t_y_marks_a_testing_domain() -> None:
    result = outcome(BASE, "v=DKIM1; k={k}; t=y; p={p}")
    assert result.result is DkimResult.PASS and result.testing


def test_3_6_1_unknown_key_record_tags_are_ignored() -> None:
    assert outcome(BASE, "v=DKIM1; k={k}; n=notes here; zz=1; p={p}").result is DkimResult.PASS


@pytest.mark.parametrize(
    "record",
    [
        # The record: FWS around '=' and ';', blanks inside p=.
        "v = DKIM1 ; k = {k} ; p = {p_spaced}",
        "v = DKIM1 ; x-note = for people ; k = {k} ; zz_1 = 2 ; p = {p_spaced} ;",
        "v=DKIM1;\tk=\t{k} ;\t9z=1; x.y = a b ; n=caf\u00e9 \x01; p={p_spaced}",
        "v=DKIM1;\nk={k};\np={p_spaced}",  # a zone file's line breaks kept in the TXT data
    ],
)
def test_3_6_1_a_key_record_with_blanks_and_unknown_tags_of_any_spelling_verifies(
    record: str,
) -> None:
    """§3.2 tag-spec allows FWS around '=' and inside base64; §3.6.1 ignores unknown tags,
    whatever their name and value hold: the tags a verifier reads decide alone."""
    key = rsa_key()
    p = key_record(key, "{p}").decode()
    spaced = f"{p[:40]} {p[40:200]}\t{p[200:]}"
    text = record.replace("{p_spaced}", spaced).replace("{k}", "rsa").encode()
    assert check(forge(BASE, key), dns(text)).result is DkimResult.PASS


def test_3_6_1_a_known_key_tag_still_follows_the_grammar() -> None:
    """Leniency stops at the tags a verifier reads: a k= holding a control is malformed."""
    key = rsa_key()
    p = key_record(key, "{p}").decode()
    for record in (
        f"v=DKIM1; k=rs\x01a; p={p}",
        f"v=DKIM1; k=rsa; p={p}; ;; =",
        f"k=rsa; p={p}; b",
    ):
        result = check(forge(BASE, key), dns(record.encode()))
        assert (result.result, result.failure) == (DkimResult.PERMERROR, Failure.KEY_UNUSABLE)


def test_3_6_1_a_malformed_key_record_is_permerror() -> None:
    result = check(forge(BASE, rsa_key()), dns(b"v=DKIM1; this is not a tag list"))
    assert (result.result, result.failure) == (DkimResult.PERMERROR, Failure.KEY_UNUSABLE)


def test_3_6_2_2_several_records_one_usable_or_all_the_same() -> None:
    good = key_record(rsa_key())
    junk = b"v=spf1 -all"
    assert check(forge(BASE, rsa_key()), dns(junk, good)).result is DkimResult.PASS
    assert check(forge(BASE, rsa_key()), dns(good, good)).result is DkimResult.PASS
    pkcs1 = rsa_key().public_key().public_bytes(Encoding.DER, PublicFormat.PKCS1)
    same_key = b"v=DKIM1; k=rsa; p=" + base64.b64encode(pkcs1)
    assert check(forge(BASE, rsa_key()), dns(good, same_key)).result is DkimResult.PASS
    other = key_record(rsa_key(1024))
    result = check(forge(BASE, rsa_key()), dns(good, other))
    assert result.result is DkimResult.PERMERROR and "different key records" in result.reason


# -- §6.1 verifier actions ------------------------------------------------------------


def test_6_1_2_no_key_record_is_permerror_no_key() -> None:
    result = check(forge(BASE, rsa_key()), dns())
    assert (result.result, result.failure) == (DkimResult.PERMERROR, Failure.NO_KEY)


def test_6_1_2_a_temporary_dns_failure_is_temperror() -> None:
    def failing(name: str) -> Sequence[bytes]:
        raise DnsTemporaryError(f"{name}: SERVFAIL")

    result = check(forge(BASE, rsa_key()), failing)
    assert (result.result, result.failure) == (DkimResult.TEMPERROR, Failure.DNS_ERROR)


def test_6_1_3_a_changed_body_fails_its_body_hash() -> None:
    forged = forge(BASE, rsa_key())
    result = check(Forged(forged.headers, forged.body.replace(b"Bob", b"Rob")), rsa_dns())
    assert (result.result, result.failure) == (DkimResult.FAIL, Failure.BODY_HASH)


def test_6_1_3_a_changed_header_fails_the_signature() -> None:
    forged = forge(BASE, rsa_key())
    changed = [(n, v.replace(b"a test", b"a trap")) for n, v in forged.headers]
    result = check(Forged(changed, forged.body), rsa_dns())
    assert (result.result, result.failure) == (DkimResult.FAIL, Failure.BAD_SIGNATURE)


def test_6_1_a_bad_signature_does_not_hide_a_good_one() -> None:
    good = forge(BASE, rsa_key())
    bad = forge(BASE.replace("s=s1", "s=s2"), rsa_key(1024), headers=good.headers)
    lookup = dns(key_record(rsa_key()))
    results = verify(bad.headers, bad.body, lookup, now=NOW)
    assert [r.result for r in results] == [DkimResult.PERMERROR, DkimResult.PASS]


def test_3_7_the_b_value_and_its_whitespace_are_left_out_of_the_hash() -> None:
    forged = forge(BASE, rsa_key())
    name, value = forged.headers[0]
    refolded = value.replace(b" b=", b" b=\r\n\t ")
    assert (
        check(Forged([(name, refolded), *forged.headers[1:]], forged.body), rsa_dns()).result
        is DkimResult.PASS
    )
