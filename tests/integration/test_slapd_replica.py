"""The slapd fixture as a syncrepl consumer: ``Slapd(workdir, provider=other)``.

The consumer loads nothing itself; the base entries, the service accounts
with their passwords and every later change come from the provider.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import ldap
import pytest
from harness.slapd import SLAPD_BINARIES, Slapd, require_binaries


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Slapd, Slapd]]:
    require_binaries(*SLAPD_BINARIES)
    with (
        Slapd(tmp_path / "provider") as provider,
        Slapd(tmp_path / "consumer", provider=provider) as consumer,
    ):
        yield provider, consumer


def test_consumer_holds_the_providers_accounts_and_passwords(pair: tuple[Slapd, Slapd]) -> None:
    provider, consumer = pair
    assert consumer.ldap_uri != provider.ldap_uri
    assert consumer.milter_pw == provider.milter_pw
    conn = consumer.connect(consumer.milter_dn)  # a simple bind checks the replicated password
    try:
        assert conn.whoami_s() == f"dn:{provider.milter_dn}"
    finally:
        conn.unbind_s()
    with pytest.raises(ldap.INVALID_CREDENTIALS):
        consumer.connect(consumer.milter_dn, "not the password")


def test_an_entry_added_on_the_provider_appears_on_the_consumer(
    pair: tuple[Slapd, Slapd],
) -> None:
    provider, consumer = pair
    dn = f"ou=replicated,{provider.domains_base}"
    assert not consumer.has_entry(dn)
    sent = time.monotonic()
    provider.ldapadd(f"dn: {dn}\nobjectClass: organizationalUnit\nou: replicated\n")
    consumer.wait_for_entry(dn, timeout=5.0)
    assert time.monotonic() - sent < 5.0


def test_the_consumer_refers_writes_to_the_provider(pair: tuple[Slapd, Slapd]) -> None:
    provider, consumer = pair
    conn = consumer.connect(consumer.admin_dn)
    try:
        conn.set_option(ldap.OPT_REFERRALS, 0)
        with pytest.raises(ldap.REFERRAL) as raised:
            conn.add_s(
                f"ou=direct,{consumer.domains_base}",
                [("objectClass", [b"organizationalUnit"]), ("ou", [b"direct"])],
            )
    finally:
        conn.unbind_s()
    assert provider.ldap_uri in str(raised.value)


def test_changes_made_while_the_consumer_was_down_arrive_after_its_restart(
    pair: tuple[Slapd, Slapd],
) -> None:
    provider, consumer = pair
    consumer.stop()
    dn = f"ou=later,{provider.domains_base}"
    provider.ldapadd(f"dn: {dn}\nobjectClass: organizationalUnit\nou: later\n")
    consumer.start()
    consumer.wait_for_entry(dn, timeout=5.0)
