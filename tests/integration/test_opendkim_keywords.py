"""OpenDKIM's keywords keep their meaning: proven side by side with OpenDKIM 2.11's milter.

Each case is one configuration, given word for word to ``opendkim`` and to
``ldapdkim run`` (only their sockets, the way each reaches the test DNS
server, and in the KeyTable case where the keys live differ), and a few
transactions played to both over the milter protocol from the same client
address, client name and MTA macros.  The two decisions must be equal: how
the MTA goes on (and the SMTP code), each DKIM-Signature's d=, s=, c=, h=,
x= - t= and i=, and the DKIM results in Authentication-Results
(:mod:`harness.milterpair`).  Where ldapdkim differs on purpose, the case
says so and pins the difference (docs/reference/opendkim-differences.md).

OpenDKIM refuses a key file below a directory others can write to (``/tmp``),
so the keys and configurations live in a directory under ``/run``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from harness.keywordsite import OUTSIDE, Site, base, open_site, private_file, text, tx
from harness.milterclient import Transaction
from harness.milterpair import Decision, MilterPair
from harness.provisioning import run_cli

from ldapdkim.config.keywords import OPENDKIM_KEYWORDS


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with open_site() as opened:
        yield opened


@dataclass
class Case:
    lines: list[str]
    transactions: list[Transaction]
    opendkim_lines: list[str] = field(default_factory=list)
    ldapdkim_lines: list[str] = field(default_factory=list)
    complete: bool = False
    """The lines are the whole configuration (not added to :func:`base`)."""
    action_only: str = ""
    """When set: compare only how the MTA goes on (and the signatures), for the reason
    given; the results differ in a declared way."""


DNS_TROUBLE = (
    "a key query that times out: ldapdkim reports dkim=temperror and applies On-DNSError, "
    "OpenDKIM 2.11's milter adds no result and accepts"
)
MISSING_KEY = "a missing key is dkim=permerror in ldapdkim (RFC 8601), dkim=fail in OpenDKIM"
NO_FROM = (
    "internal mail without a From: OpenDKIM verifies it (dkim=permerror), ldapdkim passes "
    "it unsigned with no result"
)


def cases(site: Site) -> dict[str, Case]:
    """Every case by name; a case's lines are added to :func:`base` (a keyword given
    again replaces the base's value, in both programs)."""
    outside = [tx(OUTSIDE, "mx.outside.test", message=site.signed)]
    hosts = site.file("hosts", "# internal networks\n127.0.0.1\n192.0.2.0/24\n\n!192.0.2.9\n")
    patterns = site.file("patterns", "out*.mail.example.com\n")
    domains = site.file("domains", "example.com\nexample.net\n")
    ipv6 = site.file("ipv6", "::1\n2001:db8::/32\n!2001:db8:dead::/48\n")
    return {
        # -- who is internal: data sets, precedence, host names
        "internal-hosts-negated-network": Case(
            ["InternalHosts 192.0.2.1, !192.0.2.0/24"],
            [tx("192.0.2.1"), tx("192.0.2.2"), tx(OUTSIDE)],
        ),
        "internal-hosts-nested-exceptions": Case(
            ["InternalHosts 10.0.0.0/8, !10.1.0.0/16, 10.1.2.3"],
            [tx("10.1.2.3"), tx("10.1.2.4"), tx("10.2.0.1"), tx("11.0.0.1")],
        ),
        "internal-hosts-order-does-not-matter": Case(
            ["InternalHosts !192.0.2.0/24, 192.0.2.1"],
            [tx("192.0.2.1"), tx("192.0.2.2")],
        ),
        "internal-hosts-file": Case(
            [f"InternalHosts file:{hosts}"],
            [tx("192.0.2.5"), tx("192.0.2.9"), tx("127.0.0.1"), tx(OUTSIDE)],
        ),
        "internal-hosts-csl": Case(
            ["InternalHosts csl:192.0.2.5,203.0.113.0/28"],
            [tx("192.0.2.5"), tx("203.0.113.14"), tx("203.0.113.16")],
        ),
        "internal-hosts-ipv6": Case(
            # In a file: OpenDKIM reads "2001:..." inline as a data-set type and stops.
            [f"InternalHosts file:{ipv6}"],
            [tx("2001:db8::1"), tx("2001:db8:dead::1"), tx("2001:db9::1")],
        ),
        "internal-hosts-host-name": Case(
            ["InternalHosts relay.example.com"],
            [tx("203.0.113.5", "relay.example.com"), tx("203.0.113.5", "other.example.com")],
        ),
        "internal-hosts-parent-domain": Case(
            ["InternalHosts .example.com"],
            [tx("203.0.113.5", "a.b.example.com"), tx("203.0.113.5", "example.net")],
        ),
        "internal-hosts-refile": Case(
            [f"InternalHosts refile:{patterns}"],
            [tx("203.0.113.5", "out1.mail.example.com"), tx("203.0.113.5", "mail.example.com")],
        ),
        "peer-list-is-not-processed": Case(
            ["InternalHosts 192.0.2.0/24", "PeerList 192.0.2.9, 198.51.100.0/24"],
            [tx("192.0.2.9"), tx("192.0.2.8"), tx(OUTSIDE, message=site.signed)],
        ),
        "external-ignore-list": Case(
            ["ExternalIgnoreList 198.51.100.0/24"],
            [tx(OUTSIDE), tx(OUTSIDE, message=site.signed)],
        ),
        # -- MTA macros
        "macro-list-name-and-values": Case(
            ["MacroList daemon_name=MSA|ORIGINATING"],
            [
                tx(OUTSIDE, connect={"{daemon_name}": "MSA"}),
                tx(OUTSIDE, connect={"{daemon_name}": "ORIGINATING"}),
                tx(OUTSIDE, connect={"{daemon_name}": "MTA"}),
            ],
        ),
        "macro-list-presence": Case(
            ["MacroList auth_authen"],
            [tx(OUTSIDE, mail={"{auth_authen}": "alice"}), tx(OUTSIDE)],
        ),
        "authenticated-session-whatever-macro-list": Case(
            ["MacroList daemon_name=MSA"],
            [tx(OUTSIDE, mail={"{auth_type}": "PLAIN", "{auth_authen}": "alice"})],
        ),
        # -- what is signed, and how
        "domain-list-and-file": Case(
            [f"Domain file:{domains}"],
            [tx(message=text(domain="example.net")), tx(message=text(domain="example.org"))],
        ),
        "subdomains-yes": Case(
            ["SubDomains yes"],
            [tx(message=text(domain="news.example.com")), tx(message=text(domain="example.org"))],
        ),
        "subdomains-no": Case(["SubDomains no"], [tx(message=text(domain="news.example.com"))]),
        "canonicalization-single-word": Case(["Canonicalization relaxed"], [tx()]),
        "canonicalization-simple-relaxed": Case(["Canonicalization simple/relaxed"], [tx()]),
        "canonicalization-relaxed-relaxed": Case(["Canonicalization relaxed/relaxed"], [tx()]),
        "signature-ttl": Case(["SignatureTTL 3600"], [tx()]),
        "sign-and-oversign-headers": Case(
            ["SignHeaders From,Subject,Date", "OversignHeaders From,Subject"],
            [tx(message=text(extra_headers="Reply-To: carol@example.com\r\n"))],
        ),
        "software-header": Case(["SoftwareHeader yes"], [tx()]),
        "mode-s-does-not-verify": Case(["Mode s"], [tx(), *outside]),
        "mode-v-does-not-sign": Case(["Mode v"], [tx(), *outside]),
        # -- verifying
        "verify-pass-and-fail": Case(
            [],
            [
                *outside,
                tx(OUTSIDE, message=site.signed_bad),
                tx(OUTSIDE, message=text(domain="example.org")),
            ],
        ),
        "minimum-key-bits": Case(
            ["MinimumKeyBits 2048"], [tx(OUTSIDE, message=site.signed_small), *outside]
        ),
        "maximum-signatures-to-verify": Case(
            ["MaximumSignaturesToVerify 5"], [tx(OUTSIDE, message=site.signed_three)]
        ),
        "dns-timeout": Case(
            ["DNSTimeout 1", "On-DNSError accept"],
            [tx(OUTSIDE, message=site.signed_dns_trouble)],
            action_only=DNS_TROUBLE,
        ),
        # -- On-* actions
        "on-no-signature-reject": Case(
            # AlwaysAddARHeader no: with yes, OpenDKIM ignores On-NoSignature (declared).
            ["On-NoSignature reject", "AlwaysAddARHeader no"],
            [tx(OUTSIDE, message=text(domain="example.org"))],
        ),
        "on-bad-signature-tempfail": Case(
            ["On-BadSignature tempfail"], [tx(OUTSIDE, message=site.signed_bad)]
        ),
        "on-key-not-found-reject": Case(
            ["On-KeyNotFound reject"],
            [tx(OUTSIDE, message=site.signed_no_key)],
            action_only=MISSING_KEY,
        ),
        "on-default-discard": Case(
            ["On-Default discard"],
            [tx(OUTSIDE, message=site.signed_bad), tx(OUTSIDE, message=site.signed_no_key)],
            action_only=MISSING_KEY,
        ),
        "on-signature-error-and-internal-error": Case(
            ["On-SignatureError tempfail", "On-InternalError accept"],
            [tx(message=text(domain="example.com").replace(b"From: ", b"X-From: "))],
            action_only=NO_FROM,
        ),
        # -- process keywords: accepted by both, decisions unchanged
        "process-keywords": Case(
            [
                "Syslog yes",
                "SyslogFacility mail",
                "SyslogSuccess yes",
                "LogWhy yes",
                "UMask 007",
                f"PidFile {site.root}/pid",
                "RequireSafeKeys yes",
                "UserID root",
            ],
            [tx(), *outside],
        ),
    }


# Keywords of opendkim.conf that ldapdkim takes, but that no case can set the same
# way in both programs, with the reason.
NOT_SHARED = {
    "Socket": "each program needs its own port; every case sets it",
    "Nameservers": "OpenDKIM's takes no port; both reach the same test DNS server "
    "(ldapdkim by Nameservers, OpenDKIM by ResolverConfiguration)",
}


@pytest.fixture(scope="module")
def all_cases(site: Site) -> dict[str, Case]:
    return cases(site)


def _merged(site: Site, lines: list[str]) -> list[str]:
    given = {line.split()[0].lower() for line in lines}
    return [line for line in base(site) if line.split()[0].lower() not in given] + lines


CASE_NAMES = [
    "internal-hosts-negated-network",
    "internal-hosts-nested-exceptions",
    "internal-hosts-order-does-not-matter",
    "internal-hosts-file",
    "internal-hosts-csl",
    "internal-hosts-ipv6",
    "internal-hosts-host-name",
    "internal-hosts-parent-domain",
    "internal-hosts-refile",
    "peer-list-is-not-processed",
    "external-ignore-list",
    "macro-list-name-and-values",
    "macro-list-presence",
    "authenticated-session-whatever-macro-list",
    "domain-list-and-file",
    "subdomains-yes",
    "subdomains-no",
    "canonicalization-single-word",
    "canonicalization-simple-relaxed",
    "canonicalization-relaxed-relaxed",
    "signature-ttl",
    "sign-and-oversign-headers",
    "software-header",
    "mode-s-does-not-verify",
    "mode-v-does-not-sign",
    "verify-pass-and-fail",
    "minimum-key-bits",
    "maximum-signatures-to-verify",
    "dns-timeout",
    "on-no-signature-reject",
    "on-bad-signature-tempfail",
    "on-key-not-found-reject",
    "on-default-discard",
    "on-signature-error-and-internal-error",
    "process-keywords",
]


def run_case(site: Site, name: str, case: Case) -> list[tuple[Decision, Decision]]:
    workdir = site.root / name
    workdir.mkdir()
    pair = MilterPair(
        workdir,
        case.lines if case.complete else _merged(site, case.lines),
        dns_port=site.dns.port,
        opendkim_lines=case.opendkim_lines,
        ldapdkim_lines=case.ldapdkim_lines,
    )
    with pair:
        return [pair.play(t) for t in case.transactions]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_both_programs_decide_alike(site: Site, all_cases: dict[str, Case], name: str) -> None:
    case = all_cases[name]

    def compared(decision: Decision) -> object:
        if case.action_only:
            return (decision.outcome, decision.smtp_code, decision.signatures)
        return decision

    for number, (opendkim, ldapdkim) in enumerate(run_case(site, name, case)):
        assert compared(ldapdkim) == compared(opendkim), (number, case.transactions[number])


def test_every_opendkim_keyword_ldapdkim_takes_has_a_case(
    site: Site, all_cases: dict[str, Case]
) -> None:
    assert set(CASE_NAMES) == set(all_cases)
    used = {line.split()[0] for line in base(site)}
    used |= {"KeyTable", "SigningTable"}  # test_key_and_signing_tables_...
    for case in all_cases.values():
        used |= {line.split()[0] for line in case.lines}
    missing = OPENDKIM_KEYWORDS - used - set(NOT_SHARED)
    assert not missing, f"no differential case sets {sorted(missing)}"


def test_unsigned_mail_gets_dkim_none_unless_always_add_ar_header_no(site: Site) -> None:
    """Declared difference: OpenDKIM's AlwaysAddARHeader defaults to no, ldapdkim's to yes."""
    lines = [line for line in base(site) if not line.startswith("AlwaysAddARHeader")]
    case = Case(lines, [tx(OUTSIDE, message=text(domain="example.org"))], complete=True)
    [(opendkim, ldapdkim)] = run_case(site, "declared-ar-header", case)
    assert (opendkim.results, ldapdkim.results) == ((), (("none", ""),))
    case = Case([*lines, "AlwaysAddARHeader no"], case.transactions)
    [(opendkim, ldapdkim)] = run_case(site, "declared-ar-header-no", case)
    assert opendkim == ldapdkim


def test_key_and_signing_tables_against_the_directory_migrate_builds(site: Site) -> None:
    """OpenDKIM with KeyTable and SigningTable; ldapdkim with the LDIF ldapdkim migrate
    makes of that very opendkim.conf (read as ``Directory ldif:``)."""
    key_table = site.file(
        "key.table",
        f"k1 example.com:s1:{site.key_file}\nk2 example.net:s1:{site.key_file}\n",
    )
    signing_table = site.file(
        "signing.table", "*@example.com k1\n*@*.example.com k1\nbob@example.net k2\n"
    )
    table_lines = [f"KeyTable file:{key_table}", f"SigningTable refile:{signing_table}"]
    shared = [
        line for line in base(site) if line.split()[0] not in ("Domain", "Selector", "KeyFile")
    ]
    conf = site.file("opendkim-tables.conf", "\n".join([*shared, *table_lines]) + "\n")
    status, ldif, err = run_cli(
        "migrate", "--opendkim-conf", str(conf), "--base", "ou=domains,dc=example,dc=com"
    )
    assert status == 0, err
    directory = site.root / "migrated.ldif"
    private_file(directory, ldif)
    case = Case(
        shared,
        complete=True,
        transactions=[
            tx(message=text(domain="example.com")),
            tx(message=text(domain="news.example.com")),
            tx(message=text(domain="example.net").replace(b"alice@", b"bob@")),
            tx(message=text(domain="example.net")),
            tx(message=text(domain="example.org")),
        ],
        opendkim_lines=table_lines,
        ldapdkim_lines=[f"Directory ldif:{directory}"],
    )
    decisions = run_case(site, "tables", case)
    # Declared: signing is per domain; migrate says so at the line that named one sender.
    assert f"{signing_table}:3: 'bob@example.net' signs particular senders only" in err
    per_domain = decisions.pop(3)  # alice@example.net
    assert (len(per_domain[0].signatures), len(per_domain[1].signatures)) == (0, 1)
    for number, (opendkim, ldapdkim) in enumerate(decisions):
        assert ldapdkim == opendkim, (number, err)


# -- declared differences (docs/reference/opendkim-differences.md), each pinned ----------


def _one(
    site: Site, name: str, lines: list[str], transaction: Transaction
) -> tuple[Decision, Decision]:
    [pair] = run_case(site, name, Case(lines, [transaction]))
    return pair


def test_declared_a_refile_host_pattern_starting_with_a_star_includes_the_host(
    site: Site,
) -> None:
    """OpenDKIM also tries "!HOST" against each pattern; "*..." matches it, so the host
    counts as excluded there."""
    patterns = site.file("star-patterns", "*.mail.example.com\n")
    opendkim, ldapdkim = _one(
        site,
        "declared-refile-star",
        [f"InternalHosts refile:{patterns}"],
        tx("203.0.113.5", "out1.mail.example.com"),
    )
    assert (len(opendkim.signatures), len(ldapdkim.signatures)) == (0, 1)


def test_declared_a_macro_list_name_in_braces_matches(site: Site) -> None:
    """OpenDKIM puts braces around each name itself, so "{auth_authen}" never matches."""
    opendkim, ldapdkim = _one(
        site,
        "declared-macro-braces",
        ["MacroList {auth_authen}"],
        tx(OUTSIDE, mail={"{auth_authen}": "alice"}),
    )
    assert (len(opendkim.signatures), len(ldapdkim.signatures)) == (0, 1)


def test_declared_on_no_signature_applies_with_always_add_ar_header_yes(site: Site) -> None:
    opendkim, ldapdkim = _one(
        site,
        "declared-nosig-ar",
        ["On-NoSignature reject", "AlwaysAddARHeader yes"],
        tx(OUTSIDE, message=text(domain="example.org")),
    )
    assert (opendkim.outcome, ldapdkim.outcome) == ("accept", "reject")


def test_declared_maximum_signatures_checks_author_signatures_first(site: Site) -> None:
    """From example.org; signatures from the top: example.org, example.net, example.org."""
    opendkim, ldapdkim = _one(
        site,
        "declared-max-signatures",
        ["MaximumSignaturesToVerify 2"],
        tx(OUTSIDE, message=site.signed_three),
    )
    assert opendkim.results == (
        ("neutral", "example.org"),
        ("pass", "example.net"),
        ("pass", "example.org"),
    )
    assert ldapdkim.results == (("pass", "example.org"), ("pass", "example.org"))


def test_declared_the_result_names(site: Site, all_cases: dict[str, Case]) -> None:
    """The action_only cases: the same action, the result names their reasons give."""
    [(opendkim, ldapdkim)] = run_case(site, "declared-dns", all_cases["dns-timeout"])
    assert (opendkim.results, ldapdkim.results) == ((), (("temperror", "example.org"),))
    nokey = all_cases["on-key-not-found-reject"]
    [(opendkim, ldapdkim)] = run_case(site, "declared-nokey", nokey)
    assert (opendkim.results, ldapdkim.results) == (
        (("fail", "example.org"),),
        (("permerror", "example.org"),),
    )
    no_from = all_cases["on-signature-error-and-internal-error"]
    [(opendkim, ldapdkim)] = run_case(site, "declared-no-from", no_from)
    assert (opendkim.results, ldapdkim.results) == ((("permerror", ""),), ())


def test_declared_an_inline_ipv6_host_list_works(site: Site) -> None:
    """OpenDKIM reads "2001:db8::/32" inline as a data-set type and refuses to start."""
    case = Case(["InternalHosts 2001:db8::/32"], [tx("2001:db8::1")])
    with pytest.raises(RuntimeError, match="Unknown database type"):
        run_case(site, "declared-ipv6-inline", case)
    status, _, err = run_cli("check-config", "-c", str(_config(site, case.lines)))
    assert status == 0, err


def test_declared_a_key_its_own_group_can_read_is_refused(site: Site) -> None:
    """OpenDKIM accepts a group-readable key when the group is root's alone; ldapdkim
    accepts no group-readable secret."""
    loose = site.root / "loose.private"
    loose.write_bytes(site.key_file.read_bytes())
    loose.chmod(0o640)
    lines = [f"KeyFile {loose}"]
    status, _, err = run_cli("check-config", "-c", str(_config(site, lines)))
    assert status == 2 and "is readable by group or others (mode 0640)" in err
    with pytest.raises(RuntimeError, match="ldapdkim run exited with 2"):
        run_case(site, "declared-group-readable", Case(lines, [tx()]))


def _config(site: Site, lines: list[str]) -> Path:
    name = f"check-{len(list(site.root.glob('check-*.conf')))}.conf"
    return site.file(name, "\n".join(_merged(site, lines)) + "\n")
