"""ldapdkim behind a real Sendmail (INPUT_MAIL_FILTER), keys from slapd, verified by Mail::DKIM."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.mailsite import AUTHSERV_ID, MailSite, example_site, message
from harness.milterproc import MilterProcess
from harness.sendmail import Sendmail, require_sendmail
from harness.slapd import Slapd
from harness.verifiers import mail_dkim_verify, require_mail_dkim, require_mail_dkim_ed25519


@pytest.fixture
def site(slapd: Slapd, ldap_base: str, tmp_path: Path) -> Iterator[MailSite]:
    with example_site(slapd, ldap_base, tmp_path) as site:
        yield site


@pytest.fixture
def sendmail(site: MailSite, tmp_path: Path) -> Iterator[Sendmail]:
    require_sendmail()
    with MilterProcess(tmp_path / "milter", site.milter_config()) as milter:
        with Sendmail(tmp_path / "sendmail", milter=milter.socket) as mta:
            mta.milter_process = milter  # type: ignore[attr-defined]
            yield mta


def test_mail_from_an_internal_host_leaves_signed_and_verifies(
    sendmail: Sendmail, site: MailSite
) -> None:
    require_mail_dkim()
    require_mail_dkim_ed25519()
    reply = sendmail.send(message(), mail_from="alice@example.com", rcpt_to=["bob@example.net"])
    assert reply.accepted, reply
    delivered = sendmail.wait_for_message(queue_id=reply.queue_id)
    verdicts = mail_dkim_verify(delivered.data, site.dns.port)
    assert sorted((v.result, v.algorithm) for v in verdicts) == [
        ("pass", "ed25519-sha256"),
        ("pass", "rsa-sha256"),
    ], (verdicts, sendmail.milter_process.log())  # type: ignore[attr-defined]


def test_over_a_unix_socket_sendmail_streams_the_message_and_it_verifies(
    site: MailSite, tmp_path: Path
) -> None:
    """On a Unix socket ldapdkim lets the MTA skip the replies to DATA, the
    header fields, end of header and the body (``SMFIP_NR_*``); Sendmail 8.14+
    takes the offer."""
    require_sendmail()
    require_mail_dkim()
    body = "a line of the body\r\n" * 8000  # several milter body chunks
    with MilterProcess(
        tmp_path / "milter", site.milter_config(), unix_socket=tmp_path / "ldapdkim.sock"
    ) as milter:
        with Sendmail(tmp_path / "sendmail", milter=milter.postfix_address) as mta:
            reply = mta.send(
                message(subject="over a unix socket", body=body),
                mail_from="alice@example.com",
                rcpt_to=["bob@example.net"],
            )
            assert reply.accepted, reply
            delivered = mta.wait_for_message(queue_id=reply.queue_id)
    verdicts = mail_dkim_verify(delivered.data, site.dns.port)
    assert {v.result for v in verdicts} == {"pass"} and len(verdicts) == 2, milter.log()


def test_submission_daemon_signs_mail_from_outside_addresses(
    sendmail: Sendmail, site: MailSite
) -> None:
    reply = sendmail.send(
        message(),
        mail_from="alice@example.com",
        rcpt_to=["bob@example.net"],
        port=sendmail.submission_port,
        source_address="127.0.0.2",
    )
    delivered = sendmail.wait_for_message(queue_id=reply.queue_id)
    assert len(delivered.header_values("DKIM-Signature")) == 2


def test_mail_from_outside_is_verified_not_signed(sendmail: Sendmail, site: MailSite) -> None:
    reply = sendmail.send(
        message(),
        mail_from="alice@example.com",
        rcpt_to=["bob@example.net"],
        source_address="127.0.0.2",
    )
    delivered = sendmail.wait_for_message(queue_id=reply.queue_id)
    assert delivered.header_values("DKIM-Signature") == []
    unfolded = [" ".join(v.split()) for v in delivered.header_values("Authentication-Results")]
    assert unfolded == [f"{AUTHSERV_ID}; dkim=none"]
