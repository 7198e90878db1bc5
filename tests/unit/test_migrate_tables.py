"""``ldapdkim migrate``: OpenDKIM tables, single-key mode and contrib LDAP entries to LDIF.

Every test writes a small OpenDKIM set-up into ``tmp_path`` and checks the
entries that come out, or the warning or error the administrator reads.
The same migration against real slapd, OpenDKIM and Mail::DKIM is in
``tests/integration/test_migrate.py``.
"""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from ldapdkim import cli, keys
from ldapdkim.directory import ldifout
from ldapdkim.errors import ConfigError, KeyFormatError
from ldapdkim.lifecycle import migrate
from ldapdkim.model import Algorithm, PrivateKey

BASE = "ou=domains,dc=example,dc=com"

RSA = keys.generate(Algorithm.RSA_SHA256, 1024)
RSA2 = keys.generate(Algorithm.RSA_SHA256, 1024)
ED = keys.generate(Algorithm.ED25519_SHA256)


def pem(key: PrivateKey) -> str:
    return keys.private_pem(key).decode()


def raw_seed(key: PrivateKey) -> str:
    """An Ed25519 key as dkimpy's dknewkey and some OpenDKIM set-ups keep it."""
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(raw).decode()


class Setup:
    """An OpenDKIM configuration directory: opendkim.conf, tables and key files."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def file(self, name: str, text: str) -> Path:
        path = self.root / name
        path.write_text(text)
        return path

    def key(self, name: str, key: PrivateKey, *, seed: bool = False) -> Path:
        return self.file(name, raw_seed(key) + "\n" if seed else pem(key))

    def migrate(self, conf: str) -> migrate.Migration:
        return migrate.from_opendkim_conf(self.file("opendkim.conf", conf), BASE)

    def error(self, conf: str) -> str:
        with pytest.raises(ConfigError) as caught:
            self.migrate(conf)
        return str(caught.value)


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


def domains(result: migrate.Migration) -> dict[str, tuple[list[str], str, list[str]]]:
    """ou of each domain entry -> (dkimSignDomainName, dkimSignSubdomains, selectors)."""
    found: dict[str, tuple[list[str], str, list[str]]] = {}
    for dn, attrs in result.records:
        if b"dkimSignDomainPolicy" in attrs["objectClass"]:
            ou = attrs["ou"][0].decode()
            names = [v.decode() for v in attrs["dkimSignDomainName"]]
            selectors = [
                a["dkimSignSelector"][0].decode()
                for d, a in result.records
                if d.endswith("," + dn) and "dkimSignSelector" in a
            ]
            found[ou] = (names, attrs["dkimSignSubdomains"][0].decode(), selectors)
    return found


def key_entry(result: migrate.Migration, selector: str, ou: str) -> Mapping[str, Sequence[bytes]]:
    dn = f"dkimSignSelector={selector},ou={ou},{BASE}"
    return next(attrs for d, attrs in result.records if d == dn)


def same_key(attrs: Mapping[str, Sequence[bytes]], key: PrivateKey) -> bool:
    loaded = keys.load_private_key(attrs["dkimSignPrivateKey"][0], where="test")
    return keys.public_key_b64(loaded) == keys.public_key_b64(key)


# -- KeyTable and SigningTable --------------------------------------------------------


def test_refile_tables_give_one_entry_per_signing_domain_with_its_key(setup: Setup) -> None:
    rsa, ed = setup.key("rsa.private", RSA), setup.key("ed.private", ED, seed=True)
    setup.file("key.table", f"rsa  example.com:s2026:{rsa}\ned\texample.org:e2026:{ed}\n")
    setup.file("signing.table", "# who signs\n*@example.com  rsa\n*@example.org ed\n")
    result = setup.migrate(
        f"KeyTable file:{setup.root}/key.table\nSigningTable refile:{setup.root}/signing.table\n"
    )
    assert domains(result) == {
        "example.com": (["example.com"], "FALSE", ["s2026"]),
        "example.org": (["example.org"], "FALSE", ["e2026"]),
    }
    rsa_entry, ed_entry = (
        key_entry(result, "s2026", "example.com"),
        key_entry(result, "e2026", "example.org"),
    )
    assert rsa_entry["dkimSignAlgorithm"] == [b"rsa-sha256"] and same_key(rsa_entry, RSA)
    assert ed_entry["dkimSignAlgorithm"] == [b"ed25519-sha256"] and same_key(ed_entry, ED)
    assert ed_entry["dkimSignKeyState"] == [b"active"]
    assert ed_entry["description"] == [f"from {setup.root}/key.table:2".encode()]
    assert (result.domains, result.keys, result.warnings) == (2, 2, ())


def test_the_ldif_loads_back_as_the_same_records(setup: Setup) -> None:
    setup.file("key.table", f"rsa example.com:s1:{setup.key('rsa.private', RSA)}\n")
    setup.file("signing.table", "example.com rsa\n")
    result = setup.migrate(
        f"KeyTable {setup.root}/key.table\nSigningTable {setup.root}/signing.table\n"
    )
    parsed = ldifout.parse(ldifout.render(result.records))
    assert parsed == [(dn, attrs) for dn, attrs in result.records]


def test_a_subdomain_pattern_sets_dkim_sign_subdomains(setup: Setup) -> None:
    setup.file("key.table", f"rsa example.com:s1:{setup.key('rsa.private', RSA)}\n")
    setup.file("signing.table", "*@example.com rsa\n*@*.example.com rsa\n")
    result = setup.migrate(
        f"KeyTable file:{setup.root}/key.table\nSigningTable refile:{setup.root}/signing.table\n"
    )
    assert domains(result) == {"example.com": (["example.com"], "TRUE", ["s1"])}
    assert result.warnings == ()


def test_only_subdomains_signed_is_widened_to_the_domain_with_a_warning(setup: Setup) -> None:
    setup.file("key.table", f"rsa example.com:s1:{setup.key('rsa.private', RSA)}\n")
    setup.file("signing.table", "*@*.example.com rsa\n")
    result = setup.migrate(
        f"KeyTable file:{setup.root}/key.table\nSigningTable refile:{setup.root}/signing.table\n"
    )
    assert domains(result) == {"example.com": (["example.com"], "TRUE", ["s1"])}
    assert result.warnings == (
        "OpenDKIM signed only subdomains of example.com; ldapdkim signs example.com itself "
        "as well, with the same key",
    )


def test_file_table_keys_host_and_dot_domain_follow_opendkims_lookup(setup: Setup) -> None:
    setup.file(
        "key.table",
        f"a example.com:s1:{setup.key('a.private', RSA)}\nb example.org:s2:{setup.key('b', ED)}\n",
    )
    setup.file("signing.table", "example.com a\n.example.org b\n")
    result = setup.migrate(
        f"KeyTable file:{setup.root}/key.table\nSigningTable file:{setup.root}/signing.table\n"
    )
    assert domains(result) == {
        "example.com": (["example.com"], "FALSE", ["s1"]),
        "example.org": (["example.org"], "TRUE", ["s2"]),
    }
    assert "ldapdkim signs example.org itself as well" in result.warnings[0]


def test_a_per_user_entry_is_mapped_to_its_domain_with_a_warning(setup: Setup) -> None:
    setup.file("key.table", f"bob example.net:s1:{setup.key('k', RSA)}\n")
    setup.file("signing.table", "bob@example.net bob\n")
    result = setup.migrate(
        f"KeyTable file:{setup.root}/key.table\nSigningTable file:{setup.root}/signing.table\n"
    )
    assert domains(result) == {"example.net": (["example.net"], "FALSE", ["s1"])}
    assert result.warnings == (
        f"{setup.root}/signing.table:1: 'bob@example.net' signs particular senders only; "
        "ldapdkim signs per domain, so all mail from example.net is now signed "
        "(d=example.net s=s1)",
    )


def test_a_per_user_key_beside_the_domain_key_is_dropped_with_a_warning(setup: Setup) -> None:
    setup.file(
        "key.table",
        f"dom example.net:s1:{setup.key('k1', RSA)}\nbob example.net:bob:{setup.key('k2', RSA2)}\n",
    )
    setup.file("signing.table", "example.net dom\nbob@example.net bob\n")
    result = setup.migrate(
        f"KeyTable file:{setup.root}/key.table\nSigningTable file:{setup.root}/signing.table\n"
    )
    assert domains(result) == {"example.net": (["example.net"], "FALSE", ["s1"])}
    assert result.warnings == (
        f"{setup.root}/signing.table:2: 'bob@example.net' gave particular senders of "
        "example.net their own signature (d=example.net s=bob); ldapdkim signs per domain, so "
        "they are signed like the rest of example.net (d=example.net s=s1)",
    )


def test_a_per_user_pattern_below_a_domain_pattern_never_matched_and_is_quiet(
    setup: Setup,
) -> None:
    setup.file(
        "key.table",
        f"dom example.net:s1:{setup.key('k1', RSA)}\nbob example.net:bob:{setup.key('k2', RSA2)}\n",
    )
    setup.file("signing.table", "*@example.net dom\nbob@example.net bob\n")
    result = setup.migrate(
        f"KeyTable file:{setup.root}/key.table\nSigningTable refile:{setup.root}/signing.table\n"
    )
    assert domains(result) == {"example.net": (["example.net"], "FALSE", ["s1"])}
    assert result.warnings == ()


def test_refile_order_decides_which_key_signs_unless_multiple_signatures(setup: Setup) -> None:
    setup.file(
        "key.table",
        f"rsa example.com:s1:{setup.key('k1', RSA)}\ned example.com:e1:{setup.key('k2', ED)}\n",
    )
    setup.file("signing.table", "*@example.com rsa\n*@example.com ed\n")
    tables = (
        f"KeyTable file:{setup.root}/key.table\nSigningTable refile:{setup.root}/signing.table\n"
    )
    assert domains(setup.migrate(tables))["example.com"][2] == ["s1"]
    both = setup.migrate(tables + "MultipleSignatures yes\n")
    assert domains(both)["example.com"][2] == ["e1", "s1"]
    assert any("every active key of a domain signs" in note for note in both.notes)


def test_percent_means_the_sender_domain_in_key_name_domain_and_path(setup: Setup) -> None:
    setup.key("example.com.private", RSA)
    setup.key("example.net.private", RSA2)
    setup.file(
        "key.table",
        f"example.com %:mail:{setup.root}/%.private\nexample.net %:mail:{setup.root}/%.private\n",
    )
    setup.file("signing.table", "example.com %\nexample.net %\n")
    result = setup.migrate(
        f"KeyTable file:{setup.root}/key.table\nSigningTable file:{setup.root}/signing.table\n"
    )
    assert domains(result) == {
        "example.com": (["example.com"], "FALSE", ["mail"]),
        "example.net": (["example.net"], "FALSE", ["mail"]),
    }
    assert same_key(key_entry(result, "mail", "example.com"), RSA)
    assert same_key(key_entry(result, "mail", "example.net"), RSA2)


def test_signing_for_another_domain_groups_it_under_d_and_warns_that_d_changes(
    setup: Setup,
) -> None:
    setup.file("key.table", f"host example.com:s1:{setup.key('k', RSA)}\n")
    setup.file("signing.table", "*@example.com host\n*@customer.example host\n")
    result = setup.migrate(
        f"KeyTable file:{setup.root}/key.table\nSigningTable refile:{setup.root}/signing.table\n"
    )
    assert domains(result) == {
        "example.com": (["customer.example", "example.com"], "FALSE", ["s1"])
    }
    assert result.warnings == (
        f"{setup.root}/key.table:1: OpenDKIM signed mail from customer.example with "
        "d=example.com; ldapdkim signs with the From domain or the parent whose entry covers "
        "it, so it signs d=customer.example with the same key (publish "
        "s1._domainkey.customer.example: 'ldapdkim dns-records' lists it)",
    )


def test_the_signer_field_becomes_the_identity(setup: Setup) -> None:
    setup.file("key.table", f"k example.com:s1:{setup.key('k', RSA)}\n")
    setup.file("signing.table", "*@example.com k:dkim@%\n")
    result = setup.migrate(
        f"KeyTable file:{setup.root}/key.table\nSigningTable refile:{setup.root}/signing.table\n"
    )
    assert result.records[0][1]["dkimSignIdentity"] == [b"dkim@example.com"]


def test_csl_tables_are_read_inline(setup: Setup) -> None:
    path = setup.key("k", ED)
    result = setup.migrate(
        f"KeyTable csl:k=example.com:e1:{path}\nSigningTable csl:example.com=k, .example.com=k\n"
    )
    assert domains(result) == {"example.com": (["example.com"], "TRUE", ["e1"])}


def test_an_inline_base64_der_key_in_the_key_table_is_read(setup: Setup) -> None:
    der = RSA.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    setup.file("key.table", f"k example.com:s1:{base64.b64encode(der).decode()}\n")
    setup.file("signing.table", "example.com k\n")
    result = setup.migrate(
        f"KeyTable {setup.root}/key.table\nSigningTable {setup.root}/signing.table\n"
    )
    assert same_key(key_entry(result, "s1", "example.com"), RSA)


def test_patterns_for_every_domain_are_not_migrated_and_say_so(setup: Setup) -> None:
    setup.file("key.table", f"k example.com:s1:{setup.key('k', RSA)}\n")
    setup.file("signing.table", "example.com k\n* k\nbob@* k\n")
    result = setup.migrate(
        f"KeyTable file:{setup.root}/key.table\nSigningTable file:{setup.root}/signing.table\n"
    )
    assert list(domains(result)) == ["example.com"]
    table = setup.root / "signing.table"
    assert result.warnings == (
        f"{table}:2: '*' matches senders of every domain; ldapdkim signs only domains with an "
        "entry; not migrated",
        f"{table}:3: 'bob@*' matches senders of every domain; ldapdkim signs only domains "
        "with an entry; not migrated",
    )


def test_a_catch_all_does_not_make_a_domain_cover_its_subdomains(setup: Setup) -> None:
    setup.file(
        "key.table",
        f"k example.com:s1:{setup.key('k', RSA)}\nall example.net:s2:{setup.key('a', RSA2)}\n",
    )
    setup.file("signing.table", "example.com k\n* all\n")
    result = setup.migrate(
        f"KeyTable file:{setup.root}/key.table\nSigningTable file:{setup.root}/signing.table\n"
    )
    assert domains(result) == {"example.com": (["example.com"], "FALSE", ["s1"])}
    assert len(result.warnings) == 1 and "'*' matches senders of every domain" in result.warnings[0]


def test_a_key_name_missing_from_the_key_table_is_reported(setup: Setup) -> None:
    setup.file("key.table", f"k example.com:s1:{setup.key('k', RSA)}\n")
    setup.file("signing.table", "example.com k\nexample.org nokey\n")
    result = setup.migrate(
        f"KeyTable file:{setup.root}/key.table\nSigningTable file:{setup.root}/signing.table\n"
    )
    assert list(domains(result)) == ["example.com"]
    assert result.warnings == (
        f"{setup.root}/signing.table:2: key name 'nokey' is not in the KeyTable, so OpenDKIM "
        "tempfailed mail from example.org; nothing is migrated for it",
    )


def test_a_fourth_key_table_field_that_contradicts_the_key_is_reported(setup: Setup) -> None:
    setup.file("key.table", f"k example.com:s1:{setup.key('k', ED)}:rsa-sha256\n")
    setup.file("signing.table", "example.com k\n")
    result = setup.migrate(
        f"KeyTable file:{setup.root}/key.table\nSigningTable file:{setup.root}/signing.table\n"
    )
    assert key_entry(result, "s1", "example.com")["dkimSignAlgorithm"] == [b"ed25519-sha256"]
    assert result.warnings == (
        f"{setup.root}/key.table:1: the KeyTable says rsa-sha256, but the key is ed25519; "
        "the entry says ed25519-sha256",
    )


# -- single-key mode --------------------------------------------------------------------


def test_single_key_mode_gives_every_domain_an_entry_with_the_key(setup: Setup) -> None:
    path = setup.key("default.private", RSA)
    result = setup.migrate(
        f"Domain example.com, example.net\nSelector default\nKeyFile {path}\nSubDomains yes\n"
    )
    assert domains(result) == {
        "example.com": (["example.com"], "TRUE", ["default"]),
        "example.net": (["example.net"], "TRUE", ["default"]),
    }
    assert same_key(key_entry(result, "default", "example.net"), RSA)


def test_single_key_mode_reads_the_domain_list_from_a_file(setup: Setup) -> None:
    path = setup.key("default.private", ED)
    setup.file("domains", "example.com\n# old\nexample.org\n")
    result = setup.migrate(f"Domain file:{setup.root}/domains\nSelector ed\nKeyFile {path}\n")
    assert list(domains(result)) == ["example.com", "example.org"]
    assert domains(result)["example.org"][1] == "FALSE"


def test_key_file_next_to_key_table_is_ignored_as_opendkim_ignores_it(setup: Setup) -> None:
    setup.file("key.table", f"k example.com:s1:{setup.key('k', RSA)}\n")
    setup.file("signing.table", "example.com k\n")
    result = setup.migrate(
        f"KeyTable file:{setup.root}/key.table\nSigningTable file:{setup.root}/signing.table\n"
        "Domain example.org\nSelector old\nKeyFile /nonexistent\n"
    )
    assert list(domains(result)) == ["example.com"]
    assert result.warnings == (
        f"{setup.root}/opendkim.conf:3: Domain, Selector, KeyFile are ignored by OpenDKIM "
        "when a KeyTable is set; not migrated",
    )


# -- what carries over into ldapdkim.conf -------------------------------------------


AR_NOTE = (
    "OpenDKIM adds no Authentication-Results to mail without a signature "
    "(AlwaysAddARHeader no, its default); ldapdkim adds 'dkim=none' unless ldapdkim.conf "
    "says 'AlwaysAddARHeader no'"
)


def test_global_signing_keywords_are_listed_for_ldapdkim_conf(setup: Setup) -> None:
    path = setup.key("k", RSA)
    result = setup.migrate(
        "Syslog yes\nMode sv\nCanonicalization relaxed/simple\nSignatureTTL 604800\n"
        f"Domain example.com\nSelector s1\nKeyFile {path}\nOversignHeaders From\n"
    )
    assert result.notes == (
        "copy these lines into ldapdkim.conf, where they apply to every domain as in "
        "OpenDKIM: Canonicalization relaxed/simple; SignatureTTL 604800; OversignHeaders From",
        "these keywords mean the same in ldapdkim.conf: Syslog, Mode",
        AR_NOTE,
    )
    assert result.warnings == ()
    assert "dkimSignCanonicalization" not in result.records[0][1]


def test_a_value_ldapdkim_reads_differently_is_a_warning_at_its_line(setup: Setup) -> None:
    path = setup.key("k", RSA)
    result = setup.migrate(
        f"Domain example.com\nSelector s1\nKeyFile {path}\nSignHeaders *,+X-Mine\n"
    )
    conf = setup.root / "opendkim.conf"
    assert result.warnings == (
        f"{conf}:4: SignHeaders starts an OpenDKIM delta list ('*,+X,-Y'); ldapdkim does not "
        "support those: list the header fields in full; not carried over",
    )


def test_lua_scripts_and_keywords_without_equivalent_are_warnings(setup: Setup) -> None:
    path = setup.key("k", RSA)
    result = setup.migrate(
        f"Domain example.com\nSelector s1\nKeyFile {path}\n"
        "SetupPolicyScript /etc/opendkim/setup.lua\nReplaceRules /etc/opendkim/rules\n"
        "RemoveOldSignatures yes\n"
    )
    conf = setup.root / "opendkim.conf"
    assert result.warnings == (
        f"{conf}:4: SetupPolicyScript runs a Lua script, whose decisions are not migrated; "
        "express them as domain entries",
        "OpenDKIM keywords with no ldapdkim equivalent, not carried over: ReplaceRules, "
        "RemoveOldSignatures",
    )


# -- errors: what, where, how to fix ------------------------------------------------


def test_a_key_table_line_without_three_fields_names_file_and_line(setup: Setup) -> None:
    setup.file("key.table", "# keys\nk example.com:s1\n")
    setup.file("signing.table", "example.com k\n")
    message = setup.error(
        f"KeyTable file:{setup.root}/key.table\nSigningTable file:{setup.root}/signing.table\n"
    )
    assert message == (
        f"{setup.root}/key.table:2: KeyTable entry 'k' does not have the three fields domain, "
        "selector and key; write it as k DOMAIN:SELECTOR:KEY, e.g. "
        "example.com:s1:/etc/opendkim/s1.private"
    )


def test_a_signing_table_line_without_key_name_names_file_and_line(setup: Setup) -> None:
    setup.file("key.table", "k example.com:s1:/x\n")
    setup.file("signing.table", "*@example.com k\n*@example.org\n")
    message = setup.error(
        f"KeyTable file:{setup.root}/key.table\nSigningTable refile:{setup.root}/signing.table\n"
    )
    assert message == (
        f"{setup.root}/signing.table:2: SigningTable entry '*@example.org' names no key; "
        "write *@example.org KEYNAME, with KEYNAME from the KeyTable"
    )


def test_a_missing_key_file_names_the_key_table_line(setup: Setup) -> None:
    setup.file("key.table", "k example.com:s1:/nonexistent/s1.private\n")
    setup.file("signing.table", "example.com k\n")
    message = setup.error(
        f"KeyTable file:{setup.root}/key.table\nSigningTable file:{setup.root}/signing.table\n"
    )
    assert message == (
        f"{setup.root}/key.table:1: key file /nonexistent/s1.private of 'k' cannot be read "
        "(No such file or directory); fix the path, or run migrate as root or as the user "
        "opendkim runs as"
    )


def test_a_broken_key_is_named_by_file_never_shown(setup: Setup) -> None:
    secret = pem(RSA).replace("\n", "")[:200]
    path = setup.file("broken.private", "-----BEGIN PRIVATE KEY-----\n" + secret[30:] + "\n")
    setup.file("key.table", f"k example.com:s1:{path}\n")
    setup.file("signing.table", "example.com k\n")
    with pytest.raises(KeyFormatError) as caught:
        setup.migrate(
            f"KeyTable file:{setup.root}/key.table\nSigningTable file:{setup.root}/signing.table\n"
        )
    assert str(caught.value).startswith(f"{setup.root}/key.table:1: key file {path}: ")
    assert secret[40:80] not in str(caught.value)


def test_a_missing_table_file_names_the_configuration_line(setup: Setup) -> None:
    message = setup.error("Mode s\nKeyTable file:/nonexistent/key.table\nSigningTable csl:a=b\n")
    assert message == (
        f"{setup.root}/opendkim.conf:2: KeyTable file /nonexistent/key.table cannot be read "
        "(No such file or directory); fix the path, or run migrate as a user who may read it"
    )


@pytest.mark.parametrize(
    ("value", "advice"),
    [
        ("db:/etc/opendkim/keys.db", "makemap -u hash FILE"),
        ("/etc/opendkim/keys.db", "makemap -u hash FILE"),
        ("dsn:mysql://u@h/db/table=k?keycol=a?datacol=b", "export the table"),
        (
            "ldap://ldap.example.com/ou=dkim,dc=example,dc=com?DKIMSelector?sub?(DKIMIdentity=$d)",
            "'ldapdkim migrate --from-ldap URL'",
        ),
    ],
)
def test_tables_in_databases_are_errors_that_say_how_to_export(
    setup: Setup, value: str, advice: str
) -> None:
    message = setup.error(f"KeyTable csl:k=example.com:s1:/x\nSigningTable {value}\n")
    assert message.startswith(f"{setup.root}/opendkim.conf:2: SigningTable is a '")
    assert "data set, which migrate cannot read; " in message and advice in message


def test_a_bare_comma_list_with_colons_is_refused_as_opendkim_refuses_it(setup: Setup) -> None:
    message = setup.error("KeyTable k=example.com:s1:/x\nSigningTable csl:example.com=k\n")
    assert message == (
        f"{setup.root}/opendkim.conf:1: KeyTable 'k=example.com:s1:/x' has the unknown "
        "data-set type 'k=example.com:'; OpenDKIM refuses it too; write file:PATH, "
        "refile:PATH or csl:LIST"
    )


def test_no_signing_set_up_is_an_error(setup: Setup) -> None:
    assert setup.error("Mode v\nSelector s1\n") == (
        f"{setup.root}/opendkim.conf: no signing set-up: neither KeyTable and SigningTable "
        "nor Domain, Selector and KeyFile together; give the configuration opendkim signs with"
    )


def test_a_key_table_without_signing_table_points_at_the_lua_script(setup: Setup) -> None:
    message = setup.error("KeyTable csl:k=example.com:s1:/x\n")
    assert message.startswith(
        f"{setup.root}/opendkim.conf:1: KeyTable without SigningTable: keys are chosen by a "
        "Lua SetupPolicyScript"
    )


def test_include_is_followed(setup: Setup) -> None:
    path = setup.key("k", RSA)
    setup.file("signing.conf", f"Domain example.com\nSelector s1\nKeyFile {path}\n")
    result = setup.migrate("Mode sv\nInclude signing.conf\n")
    assert list(domains(result)) == ["example.com"]


# -- contrib LDAP entries (the LDAP read itself is in the integration tests) -----------


def contrib(dn: str, **attrs: str) -> tuple[str, dict[str, list[bytes]]]:
    return dn, {name: [value.encode()] for name, value in attrs.items()}


def test_contrib_entries_become_entries_per_dkim_domain() -> None:
    result = migrate.from_contrib_entries(
        [
            contrib(
                "dc=example,dc=com",
                DKIMDomain="example.com",
                DKIMSelector="B5F8A86C-1A2B-4C3D-8E9F-0123456789AB",
                DKIMKey=pem(RSA),
                DKIMIdentity="example.com",
            ),
            contrib(
                "dc=example,dc=org", DKIMDomain="example.org", DKIMSelector="ed", DKIMKey=pem(ED)
            ),
        ],
        BASE,
    )
    assert domains(result) == {
        "example.com": (["example.com"], "FALSE", ["b5f8a86c-1a2b-4c3d-8e9f-0123456789ab"]),
        "example.org": (["example.org"], "FALSE", ["ed"]),
    }
    assert result.warnings == ()
    assert result.notes[0] == (
        "entries without DKIMIdentity are taken to sign mail from their DKIMDomain"
    )


def test_two_contrib_entries_for_one_domain_both_sign_with_a_warning() -> None:
    result = migrate.from_contrib_entries(
        [
            contrib("cn=a", DKIMDomain="example.com", DKIMSelector="a", DKIMKey=pem(RSA)),
            contrib("cn=b", DKIMDomain="example.com", DKIMSelector="b", DKIMKey=pem(RSA2)),
            contrib("cn=c", DKIMDomain="example.net", DKIMSelector="c"),
        ],
        BASE,
    )
    assert domains(result) == {"example.com": (["example.com"], "FALSE", ["a", "b"])}
    assert result.warnings == (
        "entry 'cn=c' has no DKIMKey (OpenDKIM treats it as corrupt, or the bind DN may not "
        "read it); not migrated",
        "example.com has 2 DKIM entries (a, b); OpenDKIM signed with the one the server "
        "returned first, ldapdkim signs with all: set dkimSignKeyState retired on those not "
        "in use",
    )


# -- declared differences ------------------------------------------------------------


def test_settings_that_would_behave_differently_are_warnings_naming_their_lines(
    setup: Setup,
) -> None:
    path = setup.key("k", RSA)
    patterns = setup.file("relays", "*.mail.example.com\nrelay.example.com\n")
    result = setup.migrate(
        f"Domain example.com\nSelector s1\nKeyFile {path}\n"
        "MacroList {auth_authen}, daemon_name=MSA\n"
        f"InternalHosts refile:{patterns}\n"
        "PeerList 192.0.2.0/24, !relay.example.net\n"
        "AlwaysAddARHeader yes\nOn-NoSignature reject\n"
        "MaximumSignaturesToVerify 5\n"
        "Syslog yes\n"
    )
    conf = setup.root / "opendkim.conf"
    assert result.warnings == (
        f"{conf}:4: MacroList entry '{{auth_authen}}': OpenDKIM never matched a macro name "
        "written in braces (it adds them itself); ldapdkim does, so mail with that macro is "
        "now signed; remove the entry to keep OpenDKIM's behaviour",
        f"{conf}:5: InternalHosts pattern '*.mail.example.com' ({patterns} line 1): OpenDKIM "
        "counts the hosts it matches as excluded (its test for '!HOST' matches a leading "
        "'*'); ldapdkim includes them",
        f"{conf}:6: PeerList mixes host names and addresses with an exclusion: a client "
        "excluded by its name or by its address is excluded in ldapdkim, while OpenDKIM "
        "still includes it when the other kind includes it",
        f"{conf}:8: On-NoSignature reject: OpenDKIM ignores it while AlwaysAddARHeader is "
        f"yes ({conf}:7); ldapdkim applies it",
        f"{conf}:9: MaximumSignaturesToVerify 5: ldapdkim checks the author domain's "
        "signatures first and leaves unchecked ones out of Authentication-Results; OpenDKIM "
        "checks them from the top and reports the rest as neutral",
    )
    assert result.notes[-1] == (
        "these keywords mean the same in ldapdkim.conf: AlwaysAddARHeader, Syslog"
    )


# -- the command ----------------------------------------------------------------------


def test_migrate_writes_ldif_readable_by_owner_only_and_reports_on_stderr(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    path = setup.key("k", RSA)
    conf = setup.file(
        "opendkim.conf",
        f"Domain example.com\nSelector s1\nKeyFile {path}\nCanonicalization relaxed\n",
    )
    out = setup.root / "out.ldif"
    assert cli.main(["migrate", "--opendkim-conf", str(conf), "--base", BASE, "-o", str(out)]) == 0
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert [dn for dn, _ in ldifout.parse(out.read_text())] == [
        f"ou=example.com,{BASE}",
        f"dkimSignSelector=s1,ou=example.com,{BASE}",
    ]
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "ldapdkim: note: copy these lines into ldapdkim.conf, where they apply to every domain "
        "as in OpenDKIM: Canonicalization relaxed\n"
        f"ldapdkim: note: {AR_NOTE}\n"
        f"ldapdkim: migrated 1 domain entries and 1 keys to {out}\n"
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--bind-dn", "cn=x"], "--bind-dn and --bind-password-file go with --from-ldap"),
        (["--starttls"], "--starttls, --tls-ca-file, --sasl-mechanism and --sasl-user go with"),
        (["--base", "not a dn"], "base DN 'not a dn' is not a valid DN"),
    ],
)
def test_migrate_usage_errors_exit_2(
    setup: Setup, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    conf = setup.file("opendkim.conf", "Mode v\n")
    argv = ["migrate", "--opendkim-conf", str(conf), "--base", BASE, *extra]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_migrate_needs_a_source(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["migrate", "--base", BASE])
    assert caught.value.code == 2
    assert "one of the arguments --opendkim-conf --from-ldap is required" in capsys.readouterr().err
