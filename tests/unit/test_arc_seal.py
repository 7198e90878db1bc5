"""Sealing (RFC 8617 §5.1) and the ``arc=`` clause of our Authentication-Results.

What ldapdkim seals is checked by dkimpy's ``arc_verify`` (in process, RSA:
dkimpy's ARC knows no Ed25519) and by a seal digest computed here with
dkimpy's canonicalization; ``tests/integration/test_arc_interop.py`` adds
Perl Mail::DKIM and chains mixed with the other sealers.
"""

from __future__ import annotations

import base64
import hashlib
import re

import authres
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, utils
from dkim.canonicalization import CanonicalizationPolicy
from harness.arcforge import DOMAIN, KEY_NAME, SELECTOR, Chain, forge_chain, keys
from harness.arcpeers import dkimpy_verify, prepend
from harness.forge import BODY, HEADERS, PrivateKey, ed25519_key, key_record, rsa_key

from ldapdkim.model import Algorithm, Header
from ldapdkim.signing import authresults
from ldapdkim.signing.arc import ArcVerdict, ChainValidation, seal, verify_chain
from ldapdkim.signing.canonicalization import split_message
from ldapdkim.signing.keyring import MemorySigner
from ldapdkim.signing.taglist import parse_tag_list

NOW = 1796644800
SERV = "mx.example.org"


def signer(key: PrivateKey) -> MemorySigner:
    algorithm = "ed25519-sha256" if isinstance(key, ed25519.Ed25519PrivateKey) else "rsa-sha256"
    return MemorySigner(SELECTOR, Algorithm(algorithm), key)


def hop(message: bytes, key: PrivateKey, results: str = "dkim=pass header.d=example.com") -> bytes:
    """Verify, then seal: one ldapdkim hop."""
    headers, body = split_message(message)
    verdict = verify_chain(headers, body, keys(key), timeout=2, now=NOW)
    payload = f"arc={verdict.cv.value}; {results}"
    fields = sealed_by(key, headers, verdict, body=body, results=payload, timestamp=NOW)
    return prepend(fields, message)


def ours(message: bytes, key: PrivateKey) -> ArcVerdict:
    headers, body = split_message(message)
    return verify_chain(headers, body, keys(key), timeout=2, now=NOW)


PLAIN = Chain(list(HEADERS), BODY).message
NO_CHAIN = ArcVerdict(ChainValidation.NONE, 0, 0, "", None, False)


def sealed_by(
    key: PrivateKey,
    headers: list[Header] | None = None,
    verdict: ArcVerdict = NO_CHAIN,
    *,
    body: bytes = BODY,
    results: str = "dkim=pass",
    timestamp: int | None = None,
    header_names: list[bytes] | None = None,
    comments: bool = False,
) -> list[Header]:
    """:func:`seal` with this file's domain, selector and authserv-id."""
    return seal(
        headers if headers is not None else list(HEADERS),
        body,
        verdict,
        domain=DOMAIN,
        signer=signer(key),
        authserv_id=SERV,
        results=results,
        timestamp=timestamp,
        header_names=header_names,
        comments=comments,
    )


def test_one_and_three_hops_verify_with_dkimpy_and_ldapdkim() -> None:
    key = rsa_key()
    record = {KEY_NAME: key_record(key)}
    message = PLAIN
    for sets in (1, 2, 3):
        message = hop(message, key)
        assert dkimpy_verify(message, record).result == "pass", sets
        verdict = ours(message, key)
        assert (verdict.cv, verdict.instances, verdict.oldest_pass) == (
            ChainValidation.PASS,
            sets,
            0,
        )


def test_ed25519_seals_verify_where_the_seal_digest_is_computed_independently() -> None:
    key = ed25519_key()
    message = hop(hop(PLAIN, key), key)
    assert ours(message, key).cv is ChainValidation.PASS
    headers, _ = split_message(message)
    arc = [h for h in headers if h[0].lower().startswith(b"arc-")]
    assert _seal_holds(arc, key, instances=2)


def _seal_holds(arc: list[Header], key: PrivateKey, *, instances: int) -> bool:
    """The newest seal over sets 1..``instances`` of ``arc`` (fields newest first), hashed with
    dkimpy's relaxed canonicalization (RFC 8617 §5.1.1)."""
    by_instance: dict[int, dict[bytes, bytes]] = {}
    for name, value in arc:
        number = int(re.search(rb"i=(\d+);", value).group(1))  # type: ignore[union-attr]
        by_instance.setdefault(number, {})[name.lower()] = value
    newest = max(by_instance)
    scope = []
    for number in range(newest - instances + 1, newest + 1):
        group = by_instance[number]
        for name in (b"arc-authentication-results", b"arc-message-signature", b"arc-seal"):
            scope.append((name, group[name]))
    seal_name, seal_value = scope.pop()
    signature = base64.b64decode(re.sub(rb"\s", b"", seal_value.split(b"b=")[-1]))
    unsigned = seal_value[: seal_value.rindex(b"b=") + 2]
    policy = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    canonical = policy.canonicalize_headers([[n, v] for n, v in [*scope, (seal_name, unsigned)]])
    data = b"".join(n + b":" + v for n, v in canonical)
    digest = hashlib.sha256(data.removesuffix(b"\r\n")).digest()
    public = key.public_key()
    try:
        if isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(signature, digest)
        else:
            public.verify(signature, digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    except Exception:
        return False
    return True


def test_5_1_2_a_broken_chain_is_sealed_with_cv_fail_over_the_new_set_only() -> None:
    key = rsa_key()
    broken = forge_chain(2, key)
    message = Chain(broken.headers, broken.body + b"changed\r\n").message
    verdict = ours(message, key)
    assert verdict.cv is ChainValidation.FAIL
    sealed = hop(message, key)
    headers, _ = split_message(sealed)
    arc_seal = headers[0][1]
    assert b"i=3;" in arc_seal and b"cv=fail;" in arc_seal
    arc = [h for h in headers if h[0].lower().startswith(b"arc-")]
    assert _seal_holds(arc, key, instances=1)
    assert not _seal_holds(arc, key, instances=3)
    after = ours(sealed, key)
    assert (after.cv, after.instances) == (ChainValidation.FAIL, 3)
    assert "instance 3 says cv=fail" in after.reason


def test_5_1_2_arc_fields_without_a_readable_instance_are_sealed_as_a_failed_chain() -> None:
    key = ed25519_key()
    junk = (b"ARC-Seal", b" i=x; cv=none; a=ed25519-sha256; d=example.org; s=arc; b=\r\n")
    message = Chain([junk, *HEADERS], BODY).message
    verdict = ours(message, key)
    assert (verdict.cv, verdict.instances) == (ChainValidation.FAIL, 0)
    sealed = hop(message, key)
    assert b"i=1; cv=fail;" in sealed.split(b"\r\n")[0]
    assert ours(sealed, key).cv is ChainValidation.FAIL


def test_4_2_1_a_chain_at_50_sets_is_not_sealed() -> None:
    chain = forge_chain(50)
    verdict = verify_chain(chain.headers, chain.body, keys(), timeout=2)
    assert verdict.at_limit
    with pytest.raises(ValueError, match="50 sets"):
        sealed_by(ed25519_key(), chain.headers, verdict)


def test_the_ams_covers_dkim_signatures_and_never_arc_seal_or_authentication_results() -> None:
    key = ed25519_key()
    headers = [(b"DKIM-Signature", b" v=1; d=example.com; b=abc\r\n"), *HEADERS]
    fields = sealed_by(key, headers)
    ams = fields[1][1].decode()
    h = re.search(r"h=([^;]*);", ams).group(1)  # type: ignore[union-attr]
    names = ["dkim-signature", "from", "to", "subject", "date", "message-id"]
    assert re.sub(r"\s", "", h).split(":") == names
    for refused in (b"Authentication-Results", b"ARC-Seal"):
        with pytest.raises(ValueError, match="must not cover"):
            sealed_by(key, headers, header_names=[b"From", refused])


def test_the_fields_are_folded_like_dkim_signature_and_the_aar_has_no_comment_by_default() -> None:
    results = "dkim=pass (good; key) header.d=example.com;\r\n spf=pass smtp.mailfrom=example.com"
    fields = sealed_by(rsa_key(), results=results, timestamp=NOW)
    kept = sealed_by(rsa_key(), results=results, comments=True)
    assert b"dkim=pass (good; key) header.d=example.com;" in kept[2][1]
    names = [b"ARC-Seal", b"ARC-Message-Signature", b"ARC-Authentication-Results"]
    assert [name for name, _ in fields] == names
    for name, value in fields:
        assert value.startswith(b" ") and not value.endswith(b"\r\n")
        assert b"\n" not in value.replace(b"\r\n", b"")
        lines = (name + b":" + value).split(b"\r\n")
        assert all(len(line) <= 80 for line in lines), lines
    assert fields[2][1] == (
        b" i=1; mx.example.org;\r\n\tdkim=pass header.d=example.com; "
        b"spf=pass smtp.mailfrom=example.com"
    )
    seal_tags = parse_tag_list(fields[0][1])
    assert (seal_tags["cv"], seal_tags["t"], "h" in seal_tags) == (b"none", b"1796644800", False)


def test_a_verdict_that_does_not_fit_the_chain_is_refused() -> None:
    chain = forge_chain(1)
    key = ed25519_key()
    for verdict in (
        ArcVerdict(ChainValidation.NONE, 1, 0, "", None, False),
        ArcVerdict(ChainValidation.PASS, 2, 0, "", None, False),
    ):
        with pytest.raises(ValueError):
            sealed_by(key, chain.headers, verdict)
    with pytest.raises(ValueError, match="authserv-id"):
        seal(
            chain.headers,
            chain.body,
            ours(chain.message, key),
            domain=DOMAIN,
            signer=signer(key),
            authserv_id="mx; evil",
            results="arc=pass",
        )


# -- the arc= clause of Authentication-Results (RFC 8617 §4.4, RFC 8601) -------------------


def test_arc_clause_carries_oldest_pass_and_the_remote_ip() -> None:
    verdict = ArcVerdict(ChainValidation.PASS, 3, 2, "", "lists.example.net", False)
    clause = authresults.arc_clause(verdict, "192.0.2.7")
    assert clause == (
        "arc=pass (i=3 sealer lists.example.net) header.oldest-pass=2 smtp.remote-ip=192.0.2.7"
    )
    parsed = authres.AuthenticationResultsHeader.parse(f"Authentication-Results: mx; {clause}")
    [result] = parsed.results
    assert (result.method, result.result) == ("arc", "pass")
    assert authresults.arc_clause(verdict, "192.0.2.7", comment=False) == (
        "arc=pass header.oldest-pass=2 smtp.remote-ip=192.0.2.7"
    )


def test_arc_clause_without_oldest_pass_and_with_a_safe_comment() -> None:
    verdict = ArcVerdict(ChainValidation.FAIL, 2, 0, "bad (seal); x\r\ny", "example.org", False)
    assert authresults.arc_clause(verdict, "IPv6:2001:db8::1") == (
        'arc=fail (bad seal , x y) smtp.remote-ip="2001:db8::1"'
    )
    none = ArcVerdict(ChainValidation.NONE, 0, 0, "", None, False)
    assert authresults.arc_clause(none, "not an address", comment=False) == "arc=none"
