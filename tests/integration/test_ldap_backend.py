"""What only a real LDAP server shows: binds, ACLs, TLS, failover, outages, hangs."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.common import free_port
from harness.provisioning import genkey
from harness.slapd import Slapd

from ldapdkim import config
from ldapdkim.directory.cache import CachedResolver
from ldapdkim.directory.ldapbackend import LdapBackend
from ldapdkim.directory.resolution import open_directory
from ldapdkim.errors import DirectoryUnavailable


def _settings(
    slapd: Slapd,
    base: str,
    *lines: str,
    uri: str | None = None,
    user: str | None = None,
    password: str | None = None,
) -> config.Settings:
    text = "\n".join(
        [
            "Mode sv",
            f"Directory {uri or slapd.ldap_uri}/{base}",
            f"LDAPBindUser {user or slapd.milter_dn}",
            f"LDAPBindPassword {password or slapd.milter_pw}",
            *lines,
        ]
    )
    return config.parse(text + "\n", "test.conf")


def _provision(slapd: Slapd, base: str, domain: str = "example.com") -> None:
    slapd.ldapadd(genkey(domain, "s1", base, with_domain=True))


def test_only_the_milter_dn_reads_private_keys(slapd: Slapd, ldap_base: str) -> None:
    _provision(slapd, ldap_base)
    as_milter = open_directory(_settings(slapd, ldap_base)).resolve("example.com")
    as_reader = open_directory(
        _settings(slapd, ldap_base, user=slapd.reader_dn, password=slapd.reader_pw)
    ).resolve("example.com")
    assert as_milter.keys[0].key_data is not None and as_milter.keys[0].problem is None
    assert as_reader.keys[0].key_data is None
    assert "check the ACL" in (as_reader.keys[0].problem or "")


def test_wrong_password_is_reported_without_the_password(slapd: Slapd, ldap_base: str) -> None:
    _provision(slapd, ldap_base)
    directory = open_directory(_settings(slapd, ldap_base, password="Wr0ngSecret"))
    with pytest.raises(DirectoryUnavailable) as caught:
        directory.resolve("example.com")
    assert "invalid credentials" in str(caught.value)
    assert "LDAPBindPassword" in str(caught.value)
    assert "Wr0ngSecret" not in str(caught.value)


def test_sasl_external_over_ldapi(slapd: Slapd, ldap_base: str) -> None:
    _provision(slapd, ldap_base)
    text = f"Mode sv\nDirectory {slapd.ldapi_uri}/{ldap_base}\nLDAPAuthMechanism EXTERNAL\n"
    resolution = open_directory(config.parse(text, "test.conf")).resolve("example.com")
    assert resolution.keys[0].key_data is not None


@pytest.mark.parametrize("transport", ["starttls", "ldaps"])
def test_tls_with_certificate_checking(slapd: Slapd, ldap_base: str, transport: str) -> None:
    _provision(slapd, ldap_base)
    uri = slapd.ldaps_uri if transport == "ldaps" else slapd.ldap_uri
    lines = [f"LDAPTLSCACertFile {slapd.ca_cert}"]
    if transport == "starttls":
        lines.append("LDAPUseTLS yes")
    directory = open_directory(_settings(slapd, ldap_base, *lines, uri=uri))
    assert directory.resolve("example.com").keys[0].key_data is not None


def test_tls_with_the_wrong_ca_is_refused(slapd: Slapd, ldap_base: str, tmp_path: Path) -> None:
    other_ca = tmp_path / "other.crt"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=other-ca",
            "-keyout",
            str(tmp_path / "other.key"),
            "-out",
            str(other_ca),
        ],
        check=True,
        capture_output=True,
    )
    for uri, lines in [(slapd.ldaps_uri, ()), (slapd.ldap_uri, ("LDAPUseTLS yes",))]:
        directory = open_directory(
            _settings(slapd, ldap_base, f"LDAPTLSCACertFile {other_ca}", *lines, uri=uri)
        )
        with pytest.raises(DirectoryUnavailable, match="cannot reach"):
            directory.resolve("example.com")


def test_a_ca_file_that_is_not_pem_is_a_clear_error(
    slapd: Slapd, ldap_base: str, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("not a certificate\n")
    directory = open_directory(
        _settings(slapd, ldap_base, f"LDAPTLSCACertFile {garbage}", uri=slapd.ldaps_uri)
    )
    with pytest.raises(DirectoryUnavailable, match="LDAPTLSCACertFile"):
        directory.resolve("example.com")


def test_failover_to_the_second_uri_when_the_first_is_down(slapd: Slapd, ldap_base: str) -> None:
    _provision(slapd, ldap_base)
    dead = f"ldap://127.0.0.1:{free_port()}/{ldap_base}"
    text = (
        f"Mode sv\nDirectory {dead} {slapd.ldap_uri}/{ldap_base}\n"
        f"LDAPBindUser {slapd.milter_dn}\nLDAPBindPassword {slapd.milter_pw}\n"
    )
    directory = open_directory(config.parse(text, "t.conf"))
    assert directory.resolve("example.com").keys
    backend = directory.backend
    assert isinstance(backend, LdapBackend)
    # The answer came over a connection to the second server, not from anywhere else.
    assert backend.uris[0].startswith(dead.rsplit("/", 1)[0])
    connected = backend.connected_uri()
    assert connected is not None and connected.startswith(slapd.ldap_uri)
    assert connected == backend.uris[1]
    assert backend.searches >= 1


@pytest.fixture
def own_slapd(tmp_path: Path) -> Iterator[Slapd]:
    """A slapd of this test's own, to stop and freeze."""
    with Slapd(tmp_path / "own") as server:
        yield server


def test_outage_serves_last_known_good_then_recovers(own_slapd: Slapd) -> None:
    base = own_slapd.domains_base
    _provision(own_slapd, base)
    settings = _settings(own_slapd, base, "LDAPTimeout 2")
    resolver = CachedResolver(open_directory(settings), ttl=0, negative_ttl=0, max_stale=3600)
    assert resolver.resolve("example.com").keys

    own_slapd.stop()
    assert resolver.resolve("example.com").keys[0].key_data is not None
    assert resolver.stats.stale_served == 1
    with pytest.raises(DirectoryUnavailable, match=r"did not answer|cannot reach"):
        resolver.resolve("never-seen.example")

    own_slapd.start()
    assert resolver.resolve("example.com").keys
    assert resolver.stats.stale_served == 1


def test_a_frozen_server_is_bounded_by_ldap_timeout(own_slapd: Slapd) -> None:
    base = own_slapd.domains_base
    _provision(own_slapd, base)
    directory = open_directory(_settings(own_slapd, base, "LDAPTimeout 1"))
    directory.resolve("example.com")
    own_slapd.pause()
    try:
        started = time.monotonic()
        with pytest.raises(DirectoryUnavailable):
            directory.resolve("example.com")
        elapsed = time.monotonic() - started
    finally:
        own_slapd.resume()
    # One attempt on the open connection, one on a new one: two timeouts at most.
    assert elapsed < 4.5


def test_threads_share_one_connection_safely(slapd: Slapd, ldap_base: str) -> None:
    """pymilter runs a thread per SMTP connection; all of them resolve at once."""
    for domain in ("a.example", "b.example", "c.example"):
        _provision(slapd, ldap_base, domain)
    directory = open_directory(_settings(slapd, ldap_base))
    resolver = CachedResolver(directory, ttl=0, negative_ttl=0, max_stale=0)
    errors: list[BaseException] = []

    def work(domain: str) -> None:
        try:
            for _ in range(40):
                assert resolver.resolve(domain).signing_domain == domain
        except BaseException as err:
            errors.append(err)

    threads = [
        threading.Thread(target=work, args=(d,))
        for d in ["a.example", "b.example", "c.example"] * 3
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert directory.searches == 9 * 40 * 2
