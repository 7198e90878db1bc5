"""Resolution of From domains, the same for OpenLDAP, 389 Directory Server and an LDIF file.

Every test runs three times: against the session's slapd and its 389-DS
instance (the milter's service DN, over TCP) and against ``Directory
ldif:FILE``.  Entries come from the
project's own ``genkey`` output plus hand-written domain entries, as an
administrator would provision them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from harness.ldapserver import LdapServer
from harness.provisioning import genkey, without_version_line

from ldapdkim import config
from ldapdkim.directory.cache import CachedResolver
from ldapdkim.directory.resolution import Directory, open_backend, open_directory
from ldapdkim.errors import AmbiguousDomain, DomainNotFound, DomainNotSigned, InvalidDomain
from ldapdkim.model import Algorithm, Canonicalization, KeyState
from ldapdkim.signing.policy import signing_keys, signing_params


class DirectoryUnderTest:
    """One test's directory: a container in an LDAP server, or an LDIF file."""

    def __init__(self, kind: str, server: LdapServer | None, base: str, tmp_path: Path) -> None:
        self.kind = kind
        self.server = server
        self.base = base
        self.file = tmp_path / "directory.ldif"
        self.file.write_text("version: 1\n\n")

    def add(self, ldif_text: str) -> None:
        if self.server is not None:
            self.server.ldapadd(ldif_text)
        else:
            with self.file.open("a") as out:
                out.write(without_version_line(ldif_text) + "\n")

    def domain(self, name: str, *extra: str, rdn: str | None = None) -> str:
        """Add a domain entry for ``name`` with extra ``attr: value`` lines; return its DN."""
        dn = f"ou={rdn or name},{self.base}"
        lines = [
            f"dn: {dn}",
            "objectClass: organizationalUnit",
            "objectClass: dkimSignDomainPolicy",
            f"ou: {rdn or name}",
            f"dkimSignDomainName: {name}",
            *extra,
        ]
        self.add("\n".join(lines) + "\n")
        return dn

    def key(self, domain: str, selector: str, **options: object) -> None:
        self.add(genkey(domain, selector, self.base, **options))  # type: ignore[arg-type]

    def settings(self, *lines: str) -> config.Settings:
        if self.server is not None:
            source = self.server.milter_lines(self.base)
        else:
            source = [f"Directory ldif:{self.file}"]
        return config.parse("\n".join(["Mode sv", *source, *lines]) + "\n", "test.conf")

    def directory(self, *lines: str) -> Directory:
        return open_directory(self.settings(*lines))


@pytest.fixture(params=["slapd", "ds389", "samba_ad", "ldif"])
def dut(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DirectoryUnderTest]:
    if request.param == "ldif":
        yield DirectoryUnderTest("ldif", None, "ou=domains,dc=example,dc=test", tmp_path)
        return
    server: LdapServer = request.getfixturevalue(request.param)
    yield DirectoryUnderTest(request.param, server, server.new_container(), tmp_path)


NOW = datetime.now(UTC)


def test_domain_with_rsa_and_ed25519_keys_signs_with_both_in_two_searches(
    dut: DirectoryUnderTest,
) -> None:
    dut.domain("example.com")
    dut.key("example.com", "r2026")
    dut.key("example.com", "e2026", algorithm="ed25519-sha256")
    directory = dut.directory()
    resolution = directory.resolve("example.com")
    assert directory.searches == 2
    assert resolution.signing_domain == "example.com"
    assert [(k.selector, k.algorithm) for k in signing_keys(resolution, NOW)] == [
        ("e2026", Algorithm.ED25519_SHA256),
        ("r2026", Algorithm.RSA_SHA256),
    ]


def test_unknown_domain_is_not_found_with_the_reason(dut: DirectoryUnderTest) -> None:
    dut.domain("example.com")
    with pytest.raises(DomainNotFound, match=r"no policy entry for other\.example"):
        dut.directory().resolve("other.example")


def test_subdomain_uses_the_parent_policy_only_when_allowed(dut: DirectoryUnderTest) -> None:
    dut.domain("example.com")
    dut.key("example.com", "s1")
    dut.domain("example.org", "dkimSignSubdomains: TRUE")
    dut.key("example.org", "s1")
    dut.domain("example.net", "dkimSignSubdomains: FALSE")
    dut.key("example.net", "s1")
    plain, permissive = dut.directory(), dut.directory("SubDomains yes")

    with pytest.raises(DomainNotSigned, match="does not cover subdomains"):
        plain.resolve("a.b.example.com")
    assert permissive.resolve("a.b.example.com").signing_domain == "example.com"
    assert plain.resolve("mail.example.org").signing_domain == "example.org"
    with pytest.raises(DomainNotSigned, match="does not cover subdomains"):
        permissive.resolve("mail.example.net")


def test_the_most_specific_policy_wins(dut: DirectoryUnderTest) -> None:
    dut.domain("example.com", "dkimSignSubdomains: TRUE")
    dut.domain("b.example.com", "dkimSignCanonicalization: relaxed/relaxed")
    dut.key("b.example.com", "s1", domain_dn=f"ou=b.example.com,{dut.base}")
    resolution = dut.directory("SubDomains yes").resolve("a.b.example.com")
    assert resolution.signing_domain == "b.example.com"


def test_two_entries_claiming_one_domain_is_an_error_not_a_first_hit(
    dut: DirectoryUnderTest,
) -> None:
    dut.domain("example.com")
    dut.domain("example.com", rdn="copy-of-example.com")
    with pytest.raises(AmbiguousDomain, match="claimed by 2 entries"):
        dut.directory().resolve("example.com")


def test_alias_names_sign_with_the_alias_as_d(dut: DirectoryUnderTest) -> None:
    dut.domain("example.com", "dkimSignDomainName: example.net")
    dut.key("example.com", "s1")
    directory = dut.directory()
    assert directory.resolve("example.net").signing_domain == "example.net"
    assert directory.resolve("example.com").signing_domain == "example.com"


def test_switched_off_domain_is_not_signed(dut: DirectoryUnderTest) -> None:
    dut.domain("example.com", "dkimSignEnabled: FALSE")
    dut.key("example.com", "s1")
    with pytest.raises(DomainNotSigned, match="switched off"):
        dut.directory().resolve("example.com")


def test_policy_attributes_override_the_configuration(dut: DirectoryUnderTest) -> None:
    dut.domain(
        "example.com",
        "dkimSignCanonicalization: relaxed/relaxed",
        "dkimSignHeader: from",
        "dkimSignHeader: subject",
        "dkimSignOversignHeader: subject",
        "dkimSignIdentity: @example.com",
        "dkimSignExpireSeconds: 86400",
    )
    dut.domain("example.org")
    settings = dut.settings("Canonicalization simple/simple", "SignatureTTL 3600")
    directory = open_directory(settings)
    custom = signing_params(settings, directory.resolve("example.com"))
    default = signing_params(settings, directory.resolve("example.org"))
    assert custom.canonicalization == Canonicalization("relaxed", "relaxed")
    assert set(custom.sign_headers or ()) == {"from", "subject"}
    assert custom.oversign_headers == ("subject",)
    assert (custom.identity, custom.expire_seconds) == ("@example.com", 86400)
    assert default.canonicalization == Canonicalization("simple", "simple")
    assert (default.identity, default.expire_seconds, default.oversign_headers) == (
        None,
        3600,
        ("from",),
    )


def test_only_active_keys_inside_their_window_sign(dut: DirectoryUnderTest) -> None:
    dut.domain("example.com")
    dut.key("example.com", "active1", not_after="20990101000000Z")
    dut.key("example.com", "pending1", state="pending")
    dut.key("example.com", "retired1", state="retired")
    dut.key("example.com", "revoked1", state="revoked")
    dut.key("example.com", "later", algorithm="ed25519-sha256", not_before="2099-01-01T00:00Z")
    resolution = dut.directory().resolve("example.com")
    assert {k.selector: k.state for k in resolution.keys} == {
        "active1": KeyState.ACTIVE,
        "pending1": KeyState.PENDING,
        "retired1": KeyState.RETIRED,
        "revoked1": KeyState.REVOKED,
        "later": KeyState.ACTIVE,
    }
    assert [k.selector for k in signing_keys(resolution, NOW)] == ["active1"]
    assert [k.selector for k in signing_keys(resolution, NOW + timedelta(days=40000))] == ["later"]


def test_a_broken_key_entry_does_not_stop_the_other_key(dut: DirectoryUnderTest) -> None:
    dut.domain("example.com")
    dut.key("example.com", "good")
    dut.add(
        f"dn: dkimSignSelector=broken,ou=example.com,{dut.base}\n"
        "objectClass: dkimSignKey\ndkimSignSelector: broken\n"
        "dkimSignAlgorithm: rsa-sha256\ndkimSignKeyState: active\n"
        "dkimSignPrivateKey: not a key at all\n"
    )
    resolution = dut.directory().resolve("example.com")
    broken = next(k for k in resolution.keys if k.selector == "broken")
    assert broken.problem is not None and "regenerate it with 'ldapdkim genkey'" in broken.problem
    assert "not a key at all" not in broken.problem
    assert [k.selector for k in signing_keys(resolution, NOW)] == ["good"]


def test_key_shorter_than_minimum_key_bits_does_not_sign(dut: DirectoryUnderTest) -> None:
    dut.domain("example.com")
    dut.key("example.com", "short", bits=1024)
    resolution = dut.directory("MinimumKeyBits 2048").resolve("example.com")
    [key] = resolution.keys
    assert key.problem is not None and "shorter than MinimumKeyBits 2048" in key.problem
    assert signing_keys(resolution, NOW) == ()


@pytest.mark.parametrize(
    "hostile",
    [
        "*",
        "*)(objectClass=*",
        "x\0.example.com",
        "example.com\0.evil.test",
        "example.com,ou=x",
        "a" * 300,
        "example.com)(|(dkimSignDomainName=*",
    ],
)
def test_hostile_from_domains_never_reach_the_directory(
    dut: DirectoryUnderTest, hostile: str
) -> None:
    dut.domain("example.com")
    dut.key("example.com", "s1")
    directory = dut.directory()
    resolver = CachedResolver(directory, ttl=60, negative_ttl=60, max_stale=60)
    with pytest.raises(InvalidDomain):
        resolver.resolve(hostile)
    assert directory.searches == 0


def test_escaping_holds_even_below_validation(dut: DirectoryUnderTest) -> None:
    """Defence in depth: the backend escapes what it is given, validated or not."""
    dut.domain("example.com")
    backend = open_backend(dut.settings())
    assert backend.search_policies(["*"]) == []
    assert backend.search_policies(["*)(objectClass=*"]) == []
    assert len(backend.search_policies(["example.com"])) == 1


def test_utf8_domain_resolves_through_its_a_label(dut: DirectoryUnderTest) -> None:
    dut.domain("xn--bcher-kva.example")
    dut.key("bücher.example", "s1")
    resolver = CachedResolver(dut.directory(), ttl=60, negative_ttl=60, max_stale=60)
    assert resolver.resolve("Bücher.example").signing_domain == "xn--bcher-kva.example"
