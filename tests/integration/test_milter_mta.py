"""ldapdkim behind a real MTA: the cases that do not depend on which MTA.

Each test runs once behind Postfix and once behind Sendmail (``harness.mta``),
with a milter of its own (``ldapdkim run``), keys from the session's slapd and
public keys from a loopback DNS server, and checks the copy the MTA relayed
to its sink with verifiers that are not dkimpy.  What only Postfix has is in
test_milter_postfix.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from harness.mailsite import AUTHSERV_ID, MailSite, example_site, message
from harness.milterload import LoadOptions, open_session
from harness.milterproto import SMFIP_NR_BODY, SMFIP_NR_HDR, MilterAddress
from harness.mta import MTAS, Mta, MtaSetup, make_mta, milter_behind
from harness.slapd import Slapd
from harness.smtp import header_values
from harness.verifiers import mail_dkim_verify, require_mail_dkim, require_mail_dkim_ed25519

OUTSIDE = "127.0.0.2"


Setup = MtaSetup[Mta]


@contextmanager
def _start(
    name: str, site: MailSite, tmp_path: Path, *config: str, unix: bool = False
) -> Iterator[Setup]:
    with closing(make_mta(name, tmp_path / name)) as mta:
        with milter_behind(mta, site, tmp_path / "milter", *config, unix=unix) as milter:
            yield Setup(site, milter, mta)


@pytest.fixture
def site(slapd: Slapd, ldap_base: str, tmp_path: Path) -> Iterator[MailSite]:
    with example_site(slapd, ldap_base, tmp_path) as site:
        yield site


@pytest.fixture(params=MTAS)
def mta_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def setup(mta_name: str, site: MailSite, tmp_path: Path) -> Iterator[Setup]:
    with _start(mta_name, site, tmp_path) as setup:
        yield setup


# -- signing


def test_internal_mail_leaves_signed_and_verifies_with_mail_dkim(setup: Setup) -> None:
    require_mail_dkim()
    require_mail_dkim_ed25519()
    delivered = setup.send(message(subject="internal a"))
    verdicts = mail_dkim_verify(delivered, setup.site.dns.port)
    assert sorted((v.result, v.algorithm, v.domain) for v in verdicts) == [
        ("pass", "ed25519-sha256", "example.com"),
        ("pass", "rsa-sha256", "example.com"),
    ], (verdicts, setup.milter.log())
    assert delivered.startswith(b"DKIM-Signature:")


def test_unix_socket_works_as_well(mta_name: str, site: MailSite, tmp_path: Path) -> None:
    """On a Unix socket the MTA streams DATA, the header fields and the body
    without a reply to each (``SMFIP_NR_*``); a long header and a body of several
    milter chunks arrive whole."""
    require_mail_dkim()
    fields = "".join(f"X-Trace-{n}: hop {n}\r\n\tfolded part {n}\r\n" for n in range(40))
    long_one = message(subject="over local socket, long", body="line of the body\r\n" * 12000)
    long_one = long_one.replace(b"\r\n\r\n", b"\r\n" + fields.encode() + b"\r\n", 1)
    with _start(mta_name, site, tmp_path, unix=True) as setup:
        for sent in (message(subject="over local socket"), long_one):
            delivered = setup.send(sent)
            verdicts = mail_dkim_verify(delivered, site.dns.port)
            assert [v.result for v in verdicts] == ["pass", "pass"], verdicts


def test_over_tcp_the_steps_can_stream_without_replies_too(
    mta_name: str, site: MailSite, tmp_path: Path
) -> None:
    """``NoReplyOverTCP yes``: over inet: the MTA sends DATA, the header fields, end of
    header and the body without a reply to each; mail is signed and verified as before."""
    require_mail_dkim()
    long_one = message(subject="streamed over tcp, long", body="line of the body\r\n" * 12000)
    with _start(mta_name, site, tmp_path, "NoReplyOverTCP yes") as setup:
        address = MilterAddress.parse(setup.milter.socket)
        session = open_session(address, LoadOptions(socket=setup.milter.socket))
        session.close(polite=True)
        assert address.is_tcp
        assert session.negotiated.protocol & SMFIP_NR_HDR and session.negotiated.protocol & (
            SMFIP_NR_BODY
        )
        for sent in (message(subject="streamed over tcp"), long_one):
            verdicts = mail_dkim_verify(setup.send(sent), site.dns.port)
            assert [v.result for v in verdicts] == ["pass", "pass"], verdicts
        good = setup.send(setup.site.signed_elsewhere("streamed outside"), source=OUTSIDE)
        [value] = header_values(good, "Authentication-Results")
        assert re.findall(r"dkim=(\w+)", value) == ["pass", "pass"]


def test_mail_the_milter_lets_go_early_over_tcp_arrives_whole(
    mta_name: str, site: MailSite, tmp_path: Path
) -> None:
    """Over inet: ldapdkim accepts at end of header what it will neither sign nor verify
    (Mode v, internal mail of our domain), and skips the body it will not hash (no
    author to sign for); the MTA still delivers each message, body and all."""
    body = "a line of the body\r\n" * 8000  # three milter chunks
    no_author = message(subject="no author", body=body).replace(
        b"From: Alice <alice@example.com>\r\n", b""
    )
    with _start(mta_name, site, tmp_path, "Mode sv") as setup:
        delivered = setup.send(no_author)
        assert delivered.endswith(body.encode()) and b"DKIM-Signature" not in delivered
        assert "not signed: no From header field" in setup.milter.log()
        setup.milter.reload(site.milter_config("Mode v"))
        ours = setup.send(message(subject="ours, Mode v", body=body))
        assert ours.endswith(body.encode())
        assert header_values(ours, "DKIM-Signature") == []
        assert header_values(ours, "Authentication-Results") == []


def test_submission_listener_signs_outside_clients(setup: Setup) -> None:
    delivered = setup.send(
        message(subject="via submission"), source=OUTSIDE, port=setup.mta.submission_port
    )
    assert len(header_values(delivered, "DKIM-Signature")) == 2
    assert f"MTA macro {{daemon_name}}={setup.mta.submission_daemon}" in setup.milter.log()


# -- verifying mail from outside


def test_outside_mail_is_verified_and_never_signed(setup: Setup) -> None:
    good = setup.send(setup.site.signed_elsewhere("outside good"), source=OUTSIDE)
    forged = setup.site.signed_elsewhere("outside bad").replace(b"the figures", b"new figures")
    bad = setup.send(forged, source=OUTSIDE)
    unsigned = setup.send(message(subject="outside none"), source=OUTSIDE)

    def results(delivered: bytes) -> list[str]:
        [value] = header_values(delivered, "Authentication-Results")
        assert value.startswith(f"{AUTHSERV_ID};")
        return re.findall(r"dkim=(\w+)", value)

    assert results(good) == ["pass", "pass"]
    assert results(bad) == ["fail", "fail"]
    assert results(unsigned) == ["none"]
    # Only the signatures the sender made: ldapdkim added none.
    assert [len(header_values(d, "DKIM-Signature")) for d in (good, bad, unsigned)] == [2, 2, 0]
    assert "external host 127.0.0.2 tried to send as example.com" in setup.milter.log()
