"""ARC in the milter: which mail is sealed, by which domain, with which key, and what is counted.

The chain check and the seal are the ARC library's, replaced here by a
recording fake (the library has its own tests; sealing through a real
Postfix, checked by other verifiers, is in tests/integration/test_arc_postfix.py).
The directory is the LDIF backend; the milter runs in pymilter's test context.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import Milter
import pytest
from harness.milterctx import feeder
from prometheus_client import Counter

from ldapdkim import keys, metrics, schema
from ldapdkim.directory import ldifout
from ldapdkim.directory.entries import policy_from_entry
from ldapdkim.milter import session
from ldapdkim.model import Algorithm, Header, NotSealedReason
from ldapdkim.signing import arcchoice
from ldapdkim.signing.arc import ArcVerdict, ChainValidation
from ldapdkim.signing.keyring import KeySigner

BASE = "ou=domains,dc=example,dc=com"
LIST = "list@lists.example.com"


@dataclass
class FakeArc:
    """verify_chain and seal as the milter calls them, with the verdict a test sets."""

    verdict: ArcVerdict = field(
        default_factory=lambda: ArcVerdict(ChainValidation.NONE, 0, 0, "", None, False)
    )
    checked: int = 0
    sealed: list[dict[str, Any]] = field(default_factory=list)

    def verify_chain(self, headers: Sequence[Header], body: bytes, lookup: Any, **kw: Any) -> Any:
        self.checked += 1
        return self.verdict

    def seal(
        self,
        headers: Sequence[Header],
        body: bytes,
        verdict: ArcVerdict,
        *,
        domain: str,
        signer: KeySigner,
        authserv_id: str,
        results: str,
        timestamp: int | None = None,
        header_names: Sequence[bytes] | None = None,
        comments: bool = False,
    ) -> list[Header]:
        self.sealed.append(
            {
                "comments": comments,
                "headers": list(headers),
                "body": body,
                "domain": domain,
                "selector": signer.selector,
                "results": results,
                "authserv_id": authserv_id,
            }
        )
        i = verdict.instances + 1
        return [
            (b"ARC-Seal", f" i={i}; cv=x; d={domain}; b=".encode()),
            (b"ARC-Message-Signature", f" i={i}; d={domain}; b=".encode()),
            (b"ARC-Authentication-Results", f" i={i}; {authserv_id};\r\n\t{results}".encode()),
        ]


def _domain(domain: str, *extra: tuple[str, list[bytes]]) -> tuple[str, dict[str, list[bytes]]]:
    dn, attrs = ldifout.domain_record(domain, BASE)
    attrs.update(dict(extra))
    return dn, attrs


@pytest.fixture(scope="module")
def directory_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """example.com signs and seals with its one key, arc1; lists.example.com seals and
    lists LIST; plain.example.com signs but does not seal."""
    path = tmp_path_factory.mktemp("dir") / "directory.ldif"
    rsa = keys.generate(Algorithm.RSA_SHA256)
    records = []
    listed = (schema.ARC_ADDRESS, [b"List@Lists.Example.com"])
    for domain, extra in (
        ("example.com", [(schema.ARC_SELECTOR, [b"arc1"])]),
        ("lists.example.com", [(schema.ARC_SELECTOR, [b"arc1"]), listed]),
        ("plain.example.com", []),
    ):
        dn, attrs = _domain(domain, *extra)
        records += [(dn, attrs), ldifout.key_record(dn, "arc1", rsa)]
    path.write_text(ldifout.render(records))
    return path


@pytest.fixture
def arc(monkeypatch: pytest.MonkeyPatch) -> FakeArc:
    fake = FakeArc()
    monkeypatch.setattr(session, "verify_chain", fake.verify_chain)
    monkeypatch.setattr(session, "seal", fake.seal)
    for name, labels in (
        ("ARC_SEALS", ["cv"]),
        ("ARC_CHAINS_VERIFIED", ["cv"]),
        ("ARC_NOT_SEALED", ["reason"]),
    ):
        monkeypatch.setattr(metrics, name, Counter(f"t_{name}", "test", labels, registry=None))
    return fake


def _count(series: Counter) -> dict[str, float]:
    [family] = series.collect()
    return {
        next(iter(s.labels.values())): s.value
        for s in family.samples
        if s.name.endswith("_total") and s.value
    }


@pytest.fixture
def make(directory_file: Path) -> Any:
    """make(*config lines) -> a function feeding one message, returning (rc, ctx)."""
    return functools.partial(feeder, directory_file)


OURS = b"From: Alice <alice@example.com>\nTo: bob@example.net\nSubject: hi\n\nHello\n"
LISTMAIL = b"From: Carol <carol@example.org>\nTo: list@lists.example.com\nSubject: hi\n\nHello\n"
SEAL_HOSTS = "ARCSealHosts 192.0.2.0/24"


def test_mail_from_a_seal_host_is_signed_then_sealed_above_its_signature(
    make: Any, arc: FakeArc
) -> None:
    rc, ctx = make("ARCSeal yes", "ARCSealHosts 127.0.0.1")(OURS)
    assert rc == Milter.ACCEPT
    assert ctx.top_down() == [
        "ARC-Seal",
        "ARC-Message-Signature",
        "ARC-Authentication-Results",
        "DKIM-Signature",
    ]
    [call] = arc.sealed
    assert (call["domain"], call["selector"]) == ("example.com", "arc1")
    assert call["body"] == b"Hello\n"  # as the MTA hands it over
    # The AMS covers our DKIM-Signature: the seal sees it above the message's fields.
    assert [name for name, _ in call["headers"]][:2] == [b"DKIM-Signature", b"From"]
    assert call["headers"][0][1].startswith(b" v=1; a=rsa-sha256;")
    assert call["headers"][0][1].endswith(b"\r\n")
    assert call["results"] == "dkim=none; arc=none smtp.remote-ip=127.0.0.1"
    assert call["comments"] is False  # the AAR goes without comments by default
    assert _count(metrics.ARC_SEALS) == {"none": 1}
    assert _count(metrics.ARC_CHAINS_VERIFIED) == {"none": 1}


def test_nothing_is_sealed_or_checked_when_arc_is_off(make: Any, arc: FakeArc) -> None:
    _, ctx = make(SEAL_HOSTS)(OURS, ip="192.0.2.7", macros={"{auth_authen}": "alice"})
    assert ctx.top_down() == ["DKIM-Signature"]
    assert arc.checked == 0 and arc.sealed == []


def test_clients_not_named_are_not_sealed(make: Any, arc: FakeArc) -> None:
    _, ctx = make("ARCSeal yes", SEAL_HOSTS)(OURS, ip="127.0.0.1")
    assert "ARC-Seal" not in ctx.top_down() and arc.sealed == []


def test_a_login_named_in_arc_seal_logins_is_sealed(make: Any, arc: FakeArc) -> None:
    feed = make("ARCSeal yes", "ARCSealLogins mailman")
    feed(OURS, ip="198.51.100.1", macros={"{auth_authen}": "MailMan"})
    feed(OURS, ip="198.51.100.1", macros={"{auth_authen}": "alice"})
    assert [c["domain"] for c in arc.sealed] == ["example.com"]


def test_a_list_address_the_directory_names_is_sealed_by_the_list_domain(
    make: Any, arc: FakeArc
) -> None:
    """Mail from outside to a listed address: verified, then sealed by the recipient's domain,
    never by the author's (example.org is not ours)."""
    arc.verdict = ArcVerdict(ChainValidation.PASS, 1, 0, "", "example.org", False)
    feed = make("ARCSeal yes", "ARCVerify yes", "ARCSealDomain recipient")
    rc, ctx = feed(LISTMAIL, ip="192.0.2.7", sender="carol@example.org", recipients=[LIST])
    assert rc == Milter.ACCEPT
    assert ctx.top_down() == [
        "ARC-Seal",
        "ARC-Message-Signature",
        "ARC-Authentication-Results",
        "Authentication-Results",
    ]
    [ar] = [v for n, v, _ in ctx.added if n == "Authentication-Results"]
    assert "arc=pass (i=1 sealer example.org) smtp.remote-ip=192.0.2.7" in ar
    [call] = arc.sealed
    assert (call["domain"], call["selector"]) == ("lists.example.com", "arc1")
    assert (
        call["results"] == "dkim=none; arc=pass (i=1 sealer example.org) smtp.remote-ip=192.0.2.7"
    )
    assert call["headers"][0][0] == b"Authentication-Results"
    assert arc.checked == 1  # one check serves the A-R and the seal
    assert _count(metrics.ARC_SEALS) == {"pass": 1}


def test_an_unlisted_recipient_is_not_sealed(make: Any, arc: FakeArc) -> None:
    feed = make("ARCSeal yes", "ARCSealDomain recipient")
    feed(LISTMAIL, ip="192.0.2.7", sender="carol@example.org", recipients=["x@lists.example.com"])
    assert arc.sealed == []


def test_a_broken_chain_is_sealed_with_its_failure(make: Any, arc: FakeArc) -> None:
    arc.verdict = ArcVerdict(ChainValidation.FAIL, 2, 0, "AMS 2 did not verify", "x.test", False)
    feed = make("ARCSeal yes", "ARCSealDomain recipient", "ARCAuthResultsComments yes")
    feed(LISTMAIL, ip="192.0.2.7", sender="carol@example.org", recipients=[LIST])
    [call] = arc.sealed
    assert "arc=fail (AMS 2 did not verify)" in call["results"]
    assert call["comments"] is True
    assert _count(metrics.ARC_SEALS) == {"fail": 1}
    assert _count(metrics.ARC_CHAINS_VERIFIED) == {"fail": 1}


def test_a_chain_at_the_limit_is_not_sealed_and_the_reason_is_logged(
    make: Any, arc: FakeArc, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ldapdkim")
    arc.verdict = ArcVerdict(ChainValidation.PASS, 50, 0, "", "x.test", True)
    feed = make("ARCSeal yes", "ARCSealDomain recipient")
    rc, ctx = feed(LISTMAIL, ip="192.0.2.7", sender="carol@example.org", recipients=[LIST])
    assert rc == Milter.ACCEPT and arc.sealed == []
    assert "ARC-Seal" not in ctx.top_down()
    assert "not sealed: the ARC chain may not grow: it holds 50 sets" in caplog.text
    assert _count(metrics.ARC_NOT_SEALED) == {NotSealedReason.CHAIN_AT_LIMIT.value: 1}


def test_a_chain_that_could_not_be_checked_now_is_not_marked_failed(
    make: Any, arc: FakeArc
) -> None:
    """A DNS timeout is no proof of a broken chain: cv=fail would end it for good."""
    arc.verdict = ArcVerdict(ChainValidation.FAIL, 1, 0, "key timeout", "x.test", False, True)
    feed = make("ARCSeal yes", "ARCSealDomain recipient")
    rc, _ = feed(LISTMAIL, ip="192.0.2.7", sender="carol@example.org", recipients=[LIST])
    assert rc == Milter.ACCEPT and arc.sealed == []
    assert _count(metrics.ARC_NOT_SEALED) == {NotSealedReason.CHAIN_UNCHECKED.value: 1}


@pytest.mark.parametrize(
    ("sender", "rule", "reason"),
    [
        ("carol@example.org", "envelope-sender", NotSealedReason.DOMAIN_NOT_OURS),
        ("", "envelope-sender", NotSealedReason.NO_SEALING_DOMAIN),
        ("bob@plain.example.com", "envelope-sender", NotSealedReason.DOMAIN_DOES_NOT_SEAL),
        ("bob@plain.example.com", "recipient", NotSealedReason.NO_SEALING_DOMAIN),
        ("carol@example.org", "example.org", NotSealedReason.DOMAIN_NOT_OURS),
    ],
)
def test_why_a_chosen_message_is_not_sealed_is_counted(
    make: Any, arc: FakeArc, sender: str, rule: str, reason: NotSealedReason
) -> None:
    """A forwarded message of a foreign author: the author's domain never seals."""
    feed = make("ARCSeal yes", SEAL_HOSTS, f"ARCSealDomain {rule}")
    rc, _ = feed(LISTMAIL, ip="192.0.2.7", sender=sender)
    assert rc == Milter.ACCEPT and arc.sealed == []
    assert _count(metrics.ARC_NOT_SEALED) == {reason.value: 1}


def test_a_fixed_sealing_domain_of_ours_seals_foreign_authors_mail(make: Any, arc: FakeArc) -> None:
    feed = make("ARCSeal yes", SEAL_HOSTS, "ARCSealDomain lists.example.com")
    feed(LISTMAIL, ip="192.0.2.7", sender="carol@example.org")
    assert [c["domain"] for c in arc.sealed] == ["lists.example.com"]


def test_arc_verify_alone_adds_the_chain_result_without_sealing(make: Any, arc: FakeArc) -> None:
    arc.verdict = ArcVerdict(ChainValidation.FAIL, 1, 0, "seal 1 bad", "x.test", False)
    _, ctx = make("ARCVerify yes")(LISTMAIL, ip="192.0.2.7", sender="carol@example.org")
    [ar] = [v for n, v, _ in ctx.added if n == "Authentication-Results"]
    assert ar == " mx.example.net;\n\tdkim=none;\n\tarc=fail (seal 1 bad) smtp.remote-ip=192.0.2.7"
    assert arc.sealed == []


def test_the_domain_entry_says_which_key_seals_and_which_addresses() -> None:
    dn, attrs = _domain(
        "lists.example.com",
        (schema.ARC_SELECTOR, [b" ARC2026 "]),
        (schema.ARC_ADDRESS, [b"Dev@Lists.example.com", b"ops@lists.example.com"]),
    )
    policy = policy_from_entry((dn, {k.lower(): v for k, v in attrs.items()}))
    assert policy.arc_selector == "arc2026"
    assert policy.arc_addresses == ("dev@lists.example.com", "ops@lists.example.com")
    dn, attrs = _domain("plain.example.com")
    assert policy_from_entry((dn, {k.lower(): v for k, v in attrs.items()})).arc_selector is None


def test_provisioning_can_name_the_sealing_key() -> None:
    _, attrs = ldifout.domain_record("example.com", BASE, ldifout.Delegation(arc_selector="arc1"))
    assert attrs[schema.ARC_SELECTOR] == [b"arc1"]


@pytest.mark.parametrize(("arc_seal", "asked"), [("no", False), ("yes", True)])
def test_recipients_are_asked_for_only_when_sealing(make: Any, arc_seal: str, asked: bool) -> None:
    """RCPT TO costs a round trip per recipient: without ARCSeal the MTA skips it."""
    holder = make(f"ARCSeal {arc_seal}").holder
    opts = [0, 0x1FFFFF, 0, 0]  # every protocol option an MTA can offer
    assert session.DkimMilter(holder.current).negotiate(opts) == Milter.CONTINUE
    assert bool(opts[1] & Milter.P_NORCPT) is not asked
    assert not opts[1] & Milter.P_NR_RCPT  # each recipient is answered when asked for


@pytest.mark.parametrize(
    ("address", "domain"),
    [
        ("List@Lists.Example.COM", "lists.example.com"),
        ("<bounce@lists.example.com.>", "lists.example.com"),
        ("", None),
        ("<>", None),
        ("postmaster", None),
        ("@example.com", None),
    ],
)
def test_the_domain_of_an_envelope_address(address: str, domain: str | None) -> None:
    assert arcchoice.domain_of(address) == domain


def test_over_tcp_mail_to_seal_is_not_let_go_at_end_of_header_though_it_is_not_signed(
    make: Any, arc: FakeArc
) -> None:
    """Where end of header is answered (TCP), mail left alone (here: Mode v, our own
    domain's) is accepted there and sends no body; mail chosen for sealing keeps its whole
    body for the seal."""
    long = OURS.replace(b"Hello\n", b"Hello\n" * 3000)
    tcp = "Socket inet:8891@127.0.0.1"
    rc, ctx = make("Mode v", tcp, "ARCSeal yes", "ARCSealHosts 127.0.0.1")(long)
    assert rc == Milter.ACCEPT and ctx.headers_named("DKIM-Signature") == []
    assert ctx.body_chunks == 3 and not ctx.body_skipped
    [call] = arc.sealed
    assert call["body"] == b"Hello\n" * 3000
    rc, ctx = make("Mode v", tcp)(long)
    assert rc == Milter.ACCEPT and ctx.added == [] and not hasattr(ctx, "body_chunks")
