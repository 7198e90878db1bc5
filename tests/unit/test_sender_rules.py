"""Who may sign as whom: the decision, the LDAP filter it builds, organizational domains.

The directory is replaced by a dictionary here (one part under test); the
integration tests run the same rules against slapd behind Postfix.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from ldapdkim import orgdomain
from ldapdkim.config.settings import Settings, parse
from ldapdkim.directory.entries import is_dn
from ldapdkim.directory.owners import LoginQuery, SenderDirectory
from ldapdkim.errors import ConfigError, DirectoryUnavailable, SenderMismatch
from ldapdkim.model import Alignment, DomainPolicy
from ldapdkim.signing.authorization import Sender, authorize

TENANT_A = DomainPolicy(dn="ou=a.example,ou=domains,dc=x", names=("a.example",))
GROUP = "cn=press,ou=groups,dc=x"


class FakeDirectory(SenderDirectory):
    """Owners and groups from dictionaries; counts what it was asked."""

    def __init__(self, owners: dict[str, set[str]], groups: dict[str, set[str]]) -> None:
        self.query = LoginQuery("ou=people,dc=x", "(mail=%s)", ("uid",))
        self._owners, self._groups = owners, groups
        self.asked: list[str] = []

    def owners(self, address: str) -> frozenset[str]:
        self.asked.append(address)
        return frozenset(self._owners.get(address, set()))

    def members(self, group_dn: str) -> frozenset[str]:
        return frozenset(self._groups.get(group_dn, set()))


DIRECTORY = FakeDirectory(
    {"alice@a.example": {"alice"}, "sales@a.example": {"alice", "carol"}},
    {GROUP: {"dave"}},
)


def check(
    author: str,
    *,
    login: str | None = None,
    client: str | None = "192.0.2.10",
    mail_from: str | None = None,
    policy: DomainPolicy = TENANT_A,
    directory: SenderDirectory | None = DIRECTORY,
    settings: Settings | None = None,
) -> str | None:
    """None when signing is allowed, else the refusal's text."""
    sender = Sender(author, login, client, mail_from if mail_from is not None else author)
    try:
        authorize(settings or Settings(), policy, sender, directory, lambda name: name)
    except SenderMismatch as refusal:
        return str(refusal)
    return None


# -- logins ---------------------------------------------------------------------------


def test_a_login_signs_for_an_address_it_owns_and_an_alias_listed_on_its_entry() -> None:
    assert check("alice@a.example", login="alice") is None
    assert check("sales@a.example", login="Alice") is None  # logins compare without case


def test_a_login_may_not_sign_as_someone_elses_address() -> None:
    assert check("alice@a.example", login="bob") == (
        "login 'bob' may not send as alice@a.example: it does not own the address and the "
        "domain entry does not allow it"
    )


def test_the_domain_entry_can_allow_a_login_or_a_group_for_every_address() -> None:
    policy = DomainPolicy(
        dn=TENANT_A.dn,
        names=TENANT_A.names,
        allowed_senders=("newsletter",),
        allowed_groups=(GROUP,),
    )
    assert check("anyone@a.example", login="newsletter", policy=policy) is None
    assert check("anyone@a.example", login="dave", policy=policy) is None
    assert check("anyone@a.example", login="erin", policy=policy) is not None


def test_a_login_that_looks_like_a_group_dn_is_only_a_login() -> None:
    policy = DomainPolicy(dn=TENANT_A.dn, names=TENANT_A.names, allowed_groups=(GROUP,))
    assert check("anyone@a.example", login=GROUP, policy=policy) is not None


def test_without_login_rules_and_delegation_everything_internal_signs() -> None:
    """Today's behaviour stays the default: InternalHosts and MacroList decide alone."""
    assert check("anyone@a.example", login="mallory", directory=None) is None
    assert check("anyone@a.example", login=None, directory=None) is None


# -- networks -------------------------------------------------------------------------


def test_unauthenticated_mail_signs_only_from_the_domains_own_networks() -> None:
    policy = DomainPolicy(
        dn=TENANT_A.dn,
        names=TENANT_A.names,
        allowed_networks=(ipaddress.ip_network("192.0.2.0/28"),),
    )
    assert check("x@a.example", client="192.0.2.10", policy=policy) is None
    assert check("x@a.example", client="::ffff:192.0.2.10", policy=policy) is None
    refused = check("x@a.example", client="192.0.2.99", policy=policy)
    assert refused is not None and "not among the networks its entry allows" in refused


def test_with_login_rules_on_mail_without_a_login_needs_a_network() -> None:
    assert check("x@a.example", login=None) is not None


# -- alignment ------------------------------------------------------------------------


def test_exact_alignment_wants_the_same_domain_in_mail_from() -> None:
    settings = Settings(sender_alignment=Alignment.EXACT)
    ok = check("alice@a.example", login="alice", mail_from="alice@a.example", settings=settings)
    assert ok is None
    refused = check("alice@a.example", login="alice", mail_from="x@b.example", settings=settings)
    assert refused == "MAIL FROM domain b.example is not aligned (exact) with From domain a.example"


def test_a_bounce_has_no_envelope_domain_to_align() -> None:
    settings = Settings(sender_alignment=Alignment.EXACT)
    assert check("alice@a.example", login="alice", mail_from="", settings=settings) is None


def test_the_domain_entry_overrides_the_configured_alignment() -> None:
    policy = DomainPolicy(
        dn=TENANT_A.dn, names=TENANT_A.names, sender_alignment=Alignment.ORGANIZATIONAL
    )
    sender = Sender("alice@a.example", "alice", None, "bounces@mail.a.example")
    organizational = SUFFIXES.organizational_domain
    settings = Settings(sender_alignment=Alignment.EXACT)
    authorize(settings, policy, sender, DIRECTORY, organizational)  # no exception


# -- the filter never widens ----------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("alice@a.example", "(|(mail=alice@a.example)(uid=alice))"),
        ("*@a.example", "(|(mail=\\2a@a.example)(uid=\\2a))"),
        ('")(uid=*"@a.example', '(|(mail="\\29\\28uid=\\2a"@a.example)(uid="\\29\\28uid=\\2a"))'),
        ("a\\5c\x00@a.example", "(|(mail=a\\5c5c\\00@a.example)(uid=a\\5c5c\\00))"),
    ],
)
def test_every_substitution_is_escaped(address: str, expected: str) -> None:
    query = LoginQuery("ou=people,dc=x", "(|(mail=%s)(uid=%u))", ("uid",))
    assert query.filter_for(address) == expected


def test_an_overlong_or_nul_address_owns_nothing_and_reaches_no_filter() -> None:
    class Refusing(SenderDirectory):
        def _logins(self, *args: object) -> frozenset[str]:
            raise AssertionError("a search was made")

    directory = Refusing.__new__(Refusing)
    directory.query = LoginQuery("ou=people,dc=x", "(mail=%s)", ("uid",))
    assert directory.owners("a" * 300 + "@a.example") == frozenset()
    assert directory.owners("a\0b@a.example") == frozenset()


def test_group_values_are_told_from_logins() -> None:
    assert is_dn(GROUP)
    assert not is_dn("alice") and not is_dn("a=")


# -- organizational domains ------------------------------------------------------------

SUFFIXES = orgdomain.SuffixList.parse(
    "// a piece of the public suffix list\ncom\nco.uk\n*.kawasaki.jp\n!city.kawasaki.jp\n"
    "// ===BEGIN PRIVATE DOMAINS===\nblogspot.com\n"
)


@pytest.mark.parametrize(
    ("name", "organizational"),
    [
        ("mail.a.example.com", "example.com"),
        ("a.b.example.co.uk", "example.co.uk"),
        ("x.foo.kawasaki.jp", "x.foo.kawasaki.jp"),
        ("www.city.kawasaki.jp", "city.kawasaki.jp"),
        ("me.blogspot.com", "me.blogspot.com"),
        ("sub.unlisted", "sub.unlisted"),
    ],
)
def test_organizational_domain_follows_the_public_suffix_list(
    name: str, organizational: str
) -> None:
    assert SUFFIXES.organizational_domain(name) == organizational


def test_debians_public_suffix_list_is_there() -> None:
    assert orgdomain.DEFAULT_LIST.is_file(), "install the Debian package publicsuffix"
    assert orgdomain.load().organizational_domain("mx.example.co.uk") == "example.co.uk"


# -- configuration --------------------------------------------------------------------

LDAP = "Mode s\nDirectory ldap://127.0.0.1/ou=domains,dc=x\n"


def test_the_three_sender_login_keywords_come_together() -> None:
    with pytest.raises(ConfigError) as refused:
        parse(LDAP + "SenderLoginBase ou=people,dc=x\n", "t.conf")
    assert str(refused.value) == (
        "t.conf:3: SenderLoginBase given without SenderLoginFilter and SenderLoginAttribute; "
        "sender authorization by login needs all three (docs/howto/sender-authorization.md)"
    )


def test_sender_logins_need_an_ldap_directory(tmp_path: Path) -> None:
    ldif = tmp_path / "d.ldif"
    ldif.write_text("")
    text = (
        f"Mode s\nDirectory ldif:{ldif}\nSenderLoginBase ou=people,dc=x\n"
        "SenderLoginFilter (mail=%s)\nSenderLoginAttribute uid\n"
    )
    with pytest.raises(ConfigError, match=r"t.conf:3: SenderLoginBase needs an LDAP Directory"):
        parse(text, "t.conf")


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ("mail=%s", "is not an LDAP filter in parentheses"),
        ("(mail=%x)", "uses %x"),
        ("(mail=alice)", "names no part of the address"),
        ("(|(mail=%s)", "is not an LDAP filter in parentheses"),
    ],
)
def test_a_bad_login_filter_is_refused(value: str, what: str) -> None:
    text = (
        LDAP + f"SenderLoginBase ou=p,dc=x\nSenderLoginFilter {value}\nSenderLoginAttribute uid\n"
    )
    with pytest.raises(ConfigError, match=f"t.conf:4: SenderLoginFilter .* {what}"):
        parse(text, "t.conf")


def test_on_sender_mismatch_takes_accept_reject_or_tempfail() -> None:
    text = (
        LDAP + "SenderLoginBase ou=p,dc=x\nSenderLoginFilter (mail=%s)\n"
        "SenderLoginAttribute uid\nOn-SenderMismatch discard\n"
    )
    with pytest.raises(ConfigError, match="On-SenderMismatch must be accept"):
        parse(text, "t.conf")


# -- the cache ------------------------------------------------------------------------


class FlakyBackend:
    """An LdapBackend stand-in: answers from a dictionary until told the server is down."""

    def __init__(self) -> None:
        self.searches = 0
        self.down = False

    def search(self, base: str, scope: int, filterstr: str, attrs: list[str]) -> list[object]:
        if self.down:
            raise DirectoryUnavailable("cannot reach ldap://test")
        self.searches += 1
        return [("uid=alice,ou=people,dc=x", {"uid": [b"alice"]})]


def test_warm_answers_make_no_search_and_outlive_an_outage_within_max_stale() -> None:
    now = [0.0]
    backend = FlakyBackend()
    directory = SenderDirectory(
        backend,  # type: ignore[arg-type]
        LoginQuery("ou=people,dc=x", "(mail=%s)", ("uid",)),
        ttl=300,
        negative_ttl=60,
        max_stale=3600,
        clock=lambda: now[0],
    )
    assert directory.owners("alice@a.example") == {"alice"}
    assert directory.owners("alice@a.example") == {"alice"}
    assert backend.searches == 1  # the second answer came from the cache
    now[0] = 1000.0  # past the TTL, within DirectoryMaxStale
    backend.down = True
    assert directory.owners("alice@a.example") == {"alice"}
    now[0] = 5000.0  # past DirectoryMaxStale: On-DirectoryError is the MTA's answer
    with pytest.raises(DirectoryUnavailable):
        directory.owners("alice@a.example")
    with pytest.raises(DirectoryUnavailable):
        directory.owners("never-seen@a.example")
