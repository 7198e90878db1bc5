"""ldapdkim behind a real Postfix: what leaves is signed, what arrives is verified.

Each test runs a Postfix of its own on loopback with ``smtpd_milters`` and
``non_smtpd_milters`` pointing at ``ldapdkim run``, keys from the session's
slapd, public keys from a loopback DNS server, and checks the copy that
Postfix delivered to its sink with verifiers that are not dkimpy.  The cases
that hold behind any MTA run behind Postfix and Sendmail in test_milter_mta.py.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from contextlib import closing
from pathlib import Path

import pytest
from harness.dnsserver import DnsServer
from harness.forge import forge
from harness.forge import key_record as forge_key_record
from harness.forge import rsa_key as forge_rsa_key
from harness.mailsite import AUTHSERV_ID, MailSite, example_site, message
from harness.mta import MtaSetup, PostfixMta, milter_behind
from harness.postfix import Postfix, header_values
from harness.slapd import Slapd
from harness.verifiers import (
    mail_dkim_verify,
    opendkim_verify,
    require_mail_dkim,
    require_mail_dkim_ed25519,
    require_opendkim,
)

OUTSIDE = "127.0.0.2"


class Setup(MtaSetup[PostfixMta]):
    """The milter behind Postfix, whose own methods the tests below use as well."""

    @property
    def postfix(self) -> Postfix:
        return self.mta.postfix


def _start(
    site: MailSite,
    tmp_path: Path,
    *config: str,
    unix: bool = False,
    extra_main_cf: Mapping[str, str] | None = None,
    sasl_users: Mapping[str, str] | None = None,
) -> Iterator[Setup]:
    postfix = PostfixMta(
        tmp_path / "postfix", extra_main_cf=extra_main_cf or {}, sasl_users=sasl_users
    )
    with (
        closing(postfix),
        milter_behind(postfix, site, tmp_path / "milter", *config, unix=unix) as milter,
    ):
        yield Setup(site, milter, postfix)


@pytest.fixture
def site(slapd: Slapd, ldap_base: str, tmp_path: Path) -> Iterator[MailSite]:
    with example_site(slapd, ldap_base, tmp_path) as site:
        yield site


@pytest.fixture
def mta(site: MailSite, tmp_path: Path) -> Iterator[Setup]:
    yield from _start(site, tmp_path)


# -- (a) signing


def test_internal_mail_verifies_with_opendkim(mta: Setup) -> None:
    require_opendkim()
    delivered = mta.send(message(subject="internal b"))
    verdicts = opendkim_verify(delivered, mta.site.dns.port)
    assert sorted((v.result, v.algorithm) for v in verdicts) == [
        ("pass", "ed25519-sha256"),
        ("pass", "rsa-sha256"),
    ], verdicts


@pytest.mark.parametrize("canonicalization", ["simple/simple", "relaxed/relaxed"])
def test_every_canonicalization_survives_postfix(
    site: MailSite, tmp_path: Path, canonicalization: str
) -> None:
    require_mail_dkim()
    require_mail_dkim_ed25519()
    for setup in _start(site, tmp_path, f"Canonicalization {canonicalization}"):
        delivered = setup.send(message(subject=f"canon {canonicalization}"))
        verdicts = mail_dkim_verify(delivered, site.dns.port)
        assert [v.result for v in verdicts] == ["pass", "pass"], verdicts


def test_local_submission_through_non_smtpd_milters_is_signed(mta: Setup) -> None:
    mta.postfix.submit_local(
        message(subject="via sendmail command"),
        mail_from="alice@example.com",
        rcpt_to=["bob@example.net"],
    )
    delivered = mta.postfix.wait_for_message("via sendmail command")
    assert len(header_values(delivered, "DKIM-Signature")) == 2


# -- (b) verifying mail from outside


def test_forged_results_with_our_authserv_id_are_removed(mta: Setup) -> None:
    forged = (
        f"Authentication-Results: {AUTHSERV_ID}; dkim=pass header.d=example.com\r\n"
        "Authentication-Results: other.example; dkim=pass\r\n"
    ).encode()
    delivered = mta.send(forged + message(subject="forged results"), source=OUTSIDE)
    assert header_values(delivered, "Authentication-Results") == [
        f"{AUTHSERV_ID}; dkim=none",
        "other.example; dkim=pass",
    ]


def test_dns_timeout_is_temperror_not_fail(site: MailSite, tmp_path: Path) -> None:
    signed = site.signed_elsewhere("dns trouble")
    for name in list(site.dns.records()):
        site.dns.set_timeout(name)
    for setup in _start(site, tmp_path, "On-DNSError accept", "DNSTimeout 1"):
        delivered = setup.send(signed, source=OUTSIDE)
        [value] = header_values(delivered, "Authentication-Results")
        assert re.findall(r"dkim=(\w+)", value) == ["temperror", "temperror"]


# -- (c) submission listener


def test_authenticated_sender_is_signed(site: MailSite, tmp_path: Path) -> None:
    for setup in _start(site, tmp_path, sasl_users={"alice": "wonderland"}):
        reply = setup.postfix.send(
            message(subject="authenticated"),
            mail_from="alice@example.com",
            rcpt_to=["bob@example.net"],
            source_address=OUTSIDE,
            auth=("alice", "wonderland"),
        )
        assert reply.accepted, reply
        delivered = setup.postfix.wait_for_message("authenticated")
        assert len(header_values(delivered, "DKIM-Signature")) == 2


# -- (d) directory outage


def test_mail_keeps_flowing_signed_while_slapd_is_down(tmp_path: Path) -> None:
    require_mail_dkim()
    with Slapd(tmp_path / "own-slapd") as own, DnsServer() as dns:
        # The lookup path's last-known-good (the sync replica: test_replica.py).
        extra = ["LDAPCacheTTL 0", "DirectorySync no"]
        site = MailSite(own, own.domains_base, dns, tmp_path, extra=extra)
        site.add_domains(["example.com"], "rsa-sha256")
        for setup in _start(site, tmp_path):
            first = setup.send(message(subject="before outage"))
            own.stop()
            during = [setup.send(message(subject=f"during outage {i}")) for i in range(3)]
            for delivered in [first, *during]:
                assert [v.result for v in mail_dkim_verify(delivered, dns.port)] == ["pass"]
            assert (
                "directory unavailable; using what it said about example.com" in setup.milter.log()
            )
            own.start()
            after = setup.send(message(subject="after outage"))
            assert [v.result for v in mail_dkim_verify(after, dns.port)] == ["pass"]


def test_directory_down_with_nothing_known_tempfails_by_default(tmp_path: Path) -> None:
    with Slapd(tmp_path / "own-slapd") as own, DnsServer() as dns:
        site = MailSite(own, own.domains_base, dns, tmp_path)
        own.stop()
        for setup in _start(site, tmp_path):
            reply = setup.postfix.send(
                message(subject="nothing known"),
                mail_from="a@example.com",
                rcpt_to=["bob@example.net"],
            )
            assert reply.temporary and reply.code == 451, reply
            assert "DKIM: directory unavailable" in reply.text


# -- (e) malformed and large messages


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("no-from", b"To: bob@example.net\r\nSubject: no-from\r\n\r\nbody\r\n"),
        (
            "two-from",
            b"From: a@example.com\r\nFrom: b@example.com\r\nSubject: two-from\r\n\r\nx\r\n",
        ),
        (
            "eight-bit",
            "From: Jürgen <alice@example.com>\r\nSubject: eight-bit\r\n"
            "X-Note: Grüße\r\n\r\nbody\r\n".encode(),
        ),
        (
            "bare-lf",
            b"From: alice@example.com\nSubject: bare-lf\nTo: b@example.net\n\nline\nline\n",
        ),
    ],
)
def test_malformed_messages_pass_without_crashing_the_milter(
    mta: Setup, name: str, raw: bytes
) -> None:
    delivered = mta.send(raw)
    signatures = header_values(delivered, "DKIM-Signature")
    assert len(signatures) == (0 if name in ("no-from", "two-from") else 2)
    if name in ("eight-bit", "bare-lf"):
        require_mail_dkim()
        assert {v.result for v in mail_dkim_verify(delivered, mta.site.dns.port)} == {"pass"}
    assert mta.milter.process is not None and mta.milter.process.poll() is None


def test_five_thousand_header_fields(mta: Setup) -> None:
    """Both signatures are made over a header of 5000 fields, and both verify elsewhere."""
    require_mail_dkim_ed25519()
    many = b"".join(b"X-Filler-%d: value %d\r\n" % (i, i) for i in range(5000))
    delivered = mta.send(
        message(subject="many headers").replace(b"MIME-Version", many + b"MIME-Version")
    )
    assert delivered.count(b"X-Filler-") == 5000
    assert len(header_values(delivered, "DKIM-Signature")) == 2
    results = mail_dkim_verify(delivered, mta.site.dns.port)
    assert sorted((v.result, v.algorithm) for v in results) == [
        ("pass", "ed25519-sha256"),
        ("pass", "rsa-sha256"),
    ], results


def test_a_20_mb_body_is_signed(site: MailSite, tmp_path: Path) -> None:
    require_mail_dkim()
    line = b"0123456789" * 7 + b"\r\n"
    body = (line * (20 * 1024 * 1024 // len(line))).decode()
    for setup in _start(site, tmp_path, extra_main_cf={"message_size_limit": "40000000"}):
        delivered = setup.send(message(subject="twenty megabytes", body=body))
        assert len(delivered) > 20_000_000
        assert {v.result for v in mail_dkim_verify(delivered, site.dns.port)} == {"pass"}


def test_a_refusing_configuration_is_applied(site: MailSite, tmp_path: Path) -> None:
    for setup in _start(site, tmp_path, "On-NoSignature reject"):
        reply = setup.postfix.send(
            message(subject="unsigned from outside"),
            mail_from="a@example.com",
            rcpt_to=["bob@example.net"],
            source_address=OUTSIDE,
        )
        assert reply.permanent and reply.code == 550, reply


# -- (f) reload


def test_sighup_applies_a_changed_configuration_and_refuses_a_broken_one(
    site: MailSite, tmp_path: Path
) -> None:
    for setup in _start(site, tmp_path, "Mode v"):
        before = setup.send(message(subject="before reload"))
        assert header_values(before, "DKIM-Signature") == []

        setup.milter.reload(site.milter_config("Mode sv"))
        after = setup.send(message(subject="after reload"))
        assert len(header_values(after, "DKIM-Signature")) == 2

        setup.milter.reload([*site.milter_config("Mode sv"), "NoSuchKeyword yes"])
        assert "configuration not reloaded, keeping the old one" in setup.milter.log()
        still = setup.send(message(subject="after bad reload"))
        assert len(header_values(still, "DKIM-Signature")) == 2


def test_warm_signing_makes_no_ldap_round_trips_and_sigusr1_says_so(
    site: MailSite, tmp_path: Path
) -> None:
    # The lookup path (DirectorySync no); the sync replica makes none at all (test_replica.py).
    for mta in _start(site, tmp_path, "DirectorySync no"):
        for i in range(5):
            mta.send(message(subject=f"warm {i}"))
        stats = mta.milter.stats_line()
        assert stats is not None, mta.milter.log()
        assert "signed=5 " in stats
        assert "ldap_searches=2 " in stats  # one policy and one key search, for the first
        assert "cache_hits=4 " in stats


def test_user_id_drops_privileges_after_binding_and_pid_file_is_written(
    site: MailSite, tmp_path: Path
) -> None:
    pid_dir = tmp_path / "run"
    pid_dir.mkdir()
    pid_file = pid_dir / "ldapdkim.pid"
    for setup in _start(site, tmp_path, "UserID nobody:nogroup", f"PidFile {pid_file}", unix=True):
        assert setup.milter.process is not None
        pid = setup.milter.process.pid
        assert pid_file.read_text() == f"{pid}\n"
        status = Path(f"/proc/{pid}/status").read_text()
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert uid_line.split()[1:] == ["65534"] * 4
        socket_path = setup.postfix.socket_dir / "ldapdkim.sock"
        assert socket_path.stat().st_uid == 65534
        delivered = setup.send(message(subject="as nobody"))
        assert len(header_values(delivered, "DKIM-Signature")) == 2


# -- (h) hostile mail: an Authentication-Results result, never a 451 for content


HOSTILE_BASE = (
    "v=1; a=rsa-sha256; c=relaxed/relaxed; d=hostile.example; s=k1; h=from:to:subject; bh=@; b="
)


def _hostile_messages() -> dict[str, tuple[bytes, str]]:
    """Subject -> (message, the dkim= result(s) its Authentication-Results must give)."""
    key = forge_rsa_key()

    def signed(subject: str, tags: str, **options: object) -> bytes:
        headers = [
            (b"From", b" Mallory <mallory@hostile.example>\r\n"),
            (b"To", b" Bob <bob@example.net>\r\n"),
            (b"Subject", f" {subject}\r\n".encode()),
        ]
        return forge(tags, key, headers=headers, **options).message  # type: ignore[arg-type]

    base = HOSTILE_BASE
    no_from = base.replace("h=from:to:subject", "h=to:subject")
    appended = signed("l appended", base.replace("s=k1;", "s=k1; l=10;"), body=b"0123456789")
    control = base.replace("s=k1;", "s=k1; n=\x01\x7f;")
    return {
        "h without from": (signed("h without from", no_from, sign=["to", "subject"]), "permerror"),
        "rsa sha1": (signed("rsa sha1", base.replace("rsa-sha256", "rsa-sha1")), "permerror"),
        "tag twice": (signed("tag twice", base.replace("s=k1;", "s=k1; s=k1;")), "permerror"),
        "sha1 only key": (signed("sha1 only key", base.replace("s=k1", "s=k2")), "permerror"),
        "l appended": (appended + b"Click https://evil.example/ now\r\n", "policy"),
        "control bytes": (signed("control bytes", control), "permerror"),
        "good": (signed("good", base), "pass"),
    }


def test_hostile_mail_from_outside_gets_a_result_and_is_never_tempfailed(mta: Setup) -> None:
    key = forge_rsa_key()
    mta.site.dns.set_txt("k1._domainkey.hostile.example", forge_key_record(key).decode())
    mta.site.dns.set_txt(
        "k2._domainkey.hostile.example",
        forge_key_record(key, "v=DKIM1; h=sha1; k={k}; p={p}").decode(),
    )
    for subject, (hostile, expected) in _hostile_messages().items():
        delivered = mta.send(hostile, source=OUTSIDE)  # asserts 250, not 451
        [value] = header_values(delivered, "Authentication-Results")
        assert re.findall(r"dkim=(\w+)", value) == [expected], (subject, value)
    assert "internal error" not in mta.milter.log()


def test_keys_that_never_answer_in_front_of_a_good_signature_cost_one_timeout(
    site: MailSite, tmp_path: Path
) -> None:
    key = forge_rsa_key()
    site.dns.set_txt("k1._domainkey.hostile.example", forge_key_record(key).decode())
    good = _hostile_messages()["good"][0]
    bogus = b"".join(
        f"DKIM-Signature: v=1; a=rsa-sha256; d=hostile.example; s=hang{i}; h=from;"
        " bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=AAAA\r\n".encode()
        for i in range(30)
    )
    for i in range(30):
        site.dns.set_timeout(f"hang{i}._domainkey.hostile.example")
    for setup in _start(site, tmp_path, "DNSTimeout 2", "On-DNSError accept"):
        started = time.monotonic()
        delivered = setup.send(bogus + good, source=OUTSIDE)
        elapsed = time.monotonic() - started
        [value] = header_values(delivered, "Authentication-Results")
        results = re.findall(r"dkim=(\w+)", value)
        assert results.count("pass") == 1 and results.count("temperror") == 30
        assert elapsed < 10, elapsed  # one DNSTimeout (2 s), not thirty


def test_internal_mail_with_an_ambiguous_from_leaves_unsigned_with_the_reason(mta: Setup) -> None:
    ambiguous = message(subject="ambiguous from").replace(
        b"From: Alice <alice@example.com>", b"From: <alice@example.com>, <attacker@evil.test>"
    )
    delivered = mta.send(ambiguous)
    assert header_values(delivered, "DKIM-Signature") == []
    assert "not signed: From holds several addresses" in mta.milter.log()
