"""The configuration file: opendkim.conf syntax, every keyword, every error message."""

from __future__ import annotations

import dataclasses
import grp
import os
from collections.abc import Iterator
from pathlib import Path
from textwrap import dedent

import pytest

from ldapdkim.config.directorysource import DirectorySource
from ldapdkim.config.hostlist import HostList
from ldapdkim.config.keywords import keyword_reference
from ldapdkim.config.secret import Secret
from ldapdkim.config.settings import Settings, load, parse
from ldapdkim.errors import ConfigError
from ldapdkim.model import Action, Alignment, Canonicalization, DirectorySync, Outcome


def conf(text: str) -> Settings:
    """Parse ``text`` as the file t.conf."""
    return parse(dedent(text), "t.conf")


def verifier(text: str = "") -> Settings:
    """Parse ``text`` after a first line 'Mode v', which needs no keys."""
    return conf("Mode v\n" + dedent(text))


def error(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        conf(text)
    return str(caught.value)


def verifier_error(text: str) -> str:
    return error("Mode v\n" + dedent(text))


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary current working directory, against which relative paths resolve.

    Files made in it are the owner's alone (umask 077), as RequireSafeKeys wants
    key and password files.
    """
    monkeypatch.chdir(tmp_path)
    umask = os.umask(0o077)
    try:
        yield tmp_path
    finally:
        os.umask(umask)


# Defaults ------------------------------------------------------------------------

DEFAULTS = {
    "mode": "v",  # sv is the default; 'Mode v' lets the file need no keys
    "socket": "inet:8891@127.0.0.1",
    "no_reply_over_tcp": False,
    "directory": None,
    "ldap_bind_user": None,
    "ldap_bind_password": None,
    "ldap_admin_bind_user": None,
    "ldap_admin_bind_password": None,
    "ldap_auth_mechanism": None,
    "ldap_auth_user": None,
    "ldap_authz_id": None,
    "ldap_auth_realm": None,
    "ldap_use_tls": False,
    "ldap_tls_ca_cert_file": None,
    "ldap_timeout": 5.0,
    "ldap_cache_ttl": 300.0,
    "ldap_negative_cache_ttl": 60.0,
    "directory_max_stale": 86400.0,
    "directory_sync": DirectorySync.AUTO,
    "directory_poll_interval": 10.0,
    "canonicalization": Canonicalization("simple", "simple"),
    "sign_headers": None,
    "oversign_headers": ("from",),
    "signature_ttl": 0,
    "minimum_key_bits": 1024,
    "subdomains": False,
    "domain": (),
    "selector": None,
    "key_file": None,
    "internal_hosts": HostList.parse("127.0.0.1, ::1"),
    "external_ignore_list": HostList(),
    "peer_list": HostList(),
    "macro_list": (("{auth_authen}", ()), ("{daemon_name}", ("ORIGINATING",))),
    "authserv_id": None,
    "nameservers": (),
    "dns_timeout": 5.0,
    "maximum_signatures_to_verify": 3,
    "rotation_overlap": 2 * 86400.0,
    "rotation_retire_after": 7 * 86400.0,
    "user_id": None,
    "metrics_socket": None,
    "workers": len(os.sched_getaffinity(0)),  # Workers auto: one per usable CPU
    "always_add_ar_header": True,
    "pid_file": None,
    "state_directory": Path("/var/lib/ldapdkim"),
    "umask": None,
    "syslog": True,
    "syslog_facility": "mail",
    "syslog_success": False,
    "log_why": False,
    "require_safe_keys": True,
    "key_encryption_keys": (),
    "require_sealed_keys": False,
    "pkcs11_module": None,
    "pkcs11_pin": None,
    "software_header": False,
    "sender_login_base": None,
    "sender_login_filter": None,
    "sender_login_attributes": (),
    "sender_alignment": Alignment.NONE,
    "public_suffix_list": Path("/usr/share/publicsuffix/public_suffix_list.dat"),
    "arc_verify": False,
    "arc_seal": False,
    "arc_seal_hosts": HostList(),
    "arc_seal_logins": (),
    "arc_seal_domain": "envelope-sender",
    "arc_auth_results_comments": False,
}

ACTION_DEFAULTS = {
    "default": Action.ACCEPT,
    "badsignature": Action.ACCEPT,
    "dnserror": Action.TEMPFAIL,
    "internalerror": Action.TEMPFAIL,
    "keynotfound": Action.ACCEPT,
    "nosignature": Action.ACCEPT,
    "signatureerror": Action.REJECT,
    "directoryerror": Action.TEMPFAIL,
    "sendermismatch": Action.ACCEPT,
}


@pytest.mark.parametrize(("field", "expected"), DEFAULTS.items())
def test_default(field: str, expected: object) -> None:
    assert getattr(verifier(), field) == expected


def test_every_settings_field_has_a_default_test() -> None:
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert fields == set(DEFAULTS) | {"source", "on_actions"}


def test_default_actions_follow_opendkim_conf_5() -> None:
    assert dict(verifier().on_actions) == ACTION_DEFAULTS


def test_settings_built_directly_have_the_same_defaults() -> None:
    assert Settings() == dataclasses.replace(verifier(), mode="sv", source="<defaults>")


def test_settings_are_immutable_and_hashable() -> None:
    settings = verifier()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.mode = "s"  # type: ignore[misc]
    assert hash(settings) == hash(verifier())


def test_source_is_the_name_the_text_was_parsed_as() -> None:
    assert verifier().source == "t.conf"
    assert parse("Mode v").source == "<string>"


def test_keyword_reference_lists_every_keyword_with_default_and_doc() -> None:
    reference = {name: (default, doc) for name, default, doc in keyword_reference()}
    assert reference["Mode"] == ("sv", "s to sign, v to verify, sv for both")
    assert reference["Socket"][0] == "inet:8891@127.0.0.1"
    assert reference["InternalHosts"][0] == "127.0.0.1, ::1"
    assert reference["SignHeaders"][0] == "(RFC 6376 §5.4 set)"
    assert reference["On-DNSError"][0] == "tempfail"
    assert reference["LDAPBindPasswordFile"][0] == "(none)"
    assert all(doc and "\n" not in doc for _, doc in reference.values())
    assert len(reference) == len(keyword_reference()), "each keyword once"


def test_every_keyword_in_the_reference_is_accepted(workdir: Path) -> None:
    for name, _, _ in keyword_reference():
        with pytest.raises(ConfigError) as caught:
            conf(f"{name}\n")
        assert str(caught.value).startswith(f"t.conf:1: {name} needs a value; ")


# Syntax --------------------------------------------------------------------------


def test_keyword_value_comments_and_blank_lines() -> None:
    settings = conf(
        """\
        # a comment line

        Mode   v        # a trailing comment
        \tSocket\tinet:9999@127.0.0.1\t
        """
    )
    assert settings.mode == "v"
    assert settings.socket == "inet:9999@127.0.0.1"


def test_hash_starts_a_comment_even_inside_a_value_as_in_opendkim() -> None:
    assert verifier("AuthservID mail.example.com#not part of it\n").authserv_id == (
        "mail.example.com"
    )


def test_crlf_line_ends() -> None:
    assert conf("Mode v\r\nSyslog no\r\n").syslog is False


def test_keywords_are_case_insensitive() -> None:
    settings = conf("mode v\nSYSLOG no\non-badsignature reject\n")
    assert (settings.mode, settings.syslog) == ("v", False)
    assert settings.action_for(Outcome.BAD_SIGNATURE) is Action.REJECT


def test_the_last_of_repeated_keywords_wins() -> None:
    assert verifier("Syslog no\nSyslog yes\n").syslog is True


def test_only_the_last_value_of_a_repeated_keyword_is_checked() -> None:
    assert verifier("Syslog maybe\nSyslog no\n").syslog is False


def test_keyword_without_value() -> None:
    assert verifier_error("Syslog\n") == (
        "t.conf:2: Syslog needs a value; write 'Syslog VALUE' or remove the line (default: yes)"
    )


def test_errors_are_reported_in_file_order() -> None:
    assert verifier_error("Syslog maybe\nLogWhy perhaps\n").startswith("t.conf:2: ")


# Unknown and unsupported keywords -------------------------------------------------


def test_unknown_keyword_suggests_the_closest() -> None:
    assert verifier_error("LDAPBindPasword secret\n") == (
        "t.conf:2: unknown keyword 'LDAPBindPasword'; did you mean 'LDAPBindPassword'?"
    )


def test_suggestion_ignores_case_and_gives_the_documented_spelling() -> None:
    assert verifier_error("internalhost 127.0.0.1\n") == (
        "t.conf:2: unknown keyword 'internalhost'; did you mean 'InternalHosts'?"
    )


def test_unknown_keyword_without_a_close_match() -> None:
    assert verifier_error("Frobnicate yes\n") == (
        "t.conf:2: unknown keyword 'Frobnicate'; remove the line, or check the spelling "
        "against the keyword list in ldapdkim.conf(5)"
    )


def test_keyword_glued_to_its_value() -> None:
    assert error("Mode=sv\n") == (
        "t.conf:1: unknown keyword 'Mode=sv'; write 'Mode VALUE' (keyword, blank, value)"
    )


def test_unsupported_opendkim_table_keywords_point_to_the_directory() -> None:
    assert verifier_error("KeyTable file:/etc/opendkim/KeyTable\n") == (
        "t.conf:2: OpenDKIM keyword 'KeyTable' is not supported by ldapdkim; "
        "keys live in the directory; see 'ldapdkim migrate' and docs/howto/migration.md"
    )
    assert verifier_error("signingtable refile:/etc/opendkim/SigningTable\n") == (
        "t.conf:2: OpenDKIM keyword 'SigningTable' is not supported by ldapdkim; "
        "keys live in the directory; see 'ldapdkim migrate' and docs/howto/migration.md"
    )


@pytest.mark.parametrize(
    ("keyword", "hint"),
    [
        ("Background", "ldapdkim runs in the foreground; "),
        ("AutoRestart", "ldapdkim runs in the foreground; "),
        ("AutoRestartCount", "ldapdkim runs in the foreground; "),
        ("AutoRestartRate", "ldapdkim runs in the foreground; "),
        ("Include", "ldapdkim reads one file; copy the settings into it"),
        ("BaseDirectory", "write absolute paths, or start ldapdkim in that directory "),
        ("TemporaryDirectory", "ldapdkim keeps messages in memory; remove the line"),
        ("ResolverConfiguration", "ldapdkim uses the system resolver or Nameservers; "),
        ("TrustAnchorFile", "validate DNSSEC in a local resolver"),
    ],
)
def test_unsupported_opendkim_keywords_say_what_to_do(keyword: str, hint: str) -> None:
    message = verifier_error(f"{keyword} something\n")
    assert message.startswith(
        f"t.conf:2: OpenDKIM keyword '{keyword}' is not supported by ldapdkim; {hint}"
    )


def test_a_misspelt_unsupported_keyword_is_suggested_by_its_name() -> None:
    assert verifier_error("KeyTabel x\n") == (
        "t.conf:2: unknown keyword 'KeyTabel'; did you mean 'KeyTable'?"
    )


# Booleans, durations, numbers -------------------------------------------------------


@pytest.mark.parametrize("word", ["yes", "YES", "true", "True", "on", "1"])
def test_true_booleans(word: str) -> None:
    assert verifier(f"LogWhy {word}\n").log_why is True


@pytest.mark.parametrize("word", ["no", "No", "false", "FALSE", "off", "0"])
def test_false_booleans(word: str) -> None:
    assert verifier(f"Syslog {word}\n").syslog is False


def test_bad_boolean() -> None:
    assert verifier_error("SubDomains maybe\n") == (
        "t.conf:2: SubDomains 'maybe' is not a boolean; "
        "use yes or no (also true/false, on/off, 1/0)"
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 30.0), ("2.5", 2.5), ("45s", 45.0), ("5m", 300.0), ("2h", 7200.0), ("1d", 86400.0),
     ("10 M", 600.0)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert verifier(f"LDAPCacheTTL {text}\n").ldap_cache_ttl == seconds


def test_zero_turns_caches_and_stale_serving_off() -> None:
    settings = verifier("LDAPCacheTTL 0\nLDAPNegativeCacheTTL 0\nDirectoryMaxStale 0\n")
    assert (settings.ldap_cache_ttl, settings.ldap_negative_cache_ttl) == (0.0, 0.0)
    assert settings.directory_max_stale == 0.0


def test_bad_duration() -> None:
    assert verifier_error("DirectoryMaxStale 1w\n") == (
        "t.conf:2: DirectoryMaxStale '1w' is not a duration; "
        "give seconds, or a number with s, m, h or d, e.g. 30, 5m, 1d"
    )


def test_ldap_timeout_must_be_positive() -> None:
    assert verifier("LDAPTimeout 1.5\n").ldap_timeout == 1.5
    assert verifier_error("LDAPTimeout 0\n") == (
        "t.conf:2: LDAPTimeout '0' must be more than 0; give e.g. 5 (seconds)"
    )


def test_signature_ttl_in_seconds_or_with_a_unit() -> None:
    assert verifier("SignatureTTL 604800\n").signature_ttl == 604800
    assert verifier("SignatureTTL 7d\n").signature_ttl == 604800
    assert verifier_error("SignatureTTL 1.5\n") == (
        "t.conf:2: SignatureTTL '1.5' is not a whole number of seconds; e.g. 604800 or 7d"
    )


def test_minimum_key_bits() -> None:
    assert verifier("MinimumKeyBits 2048\n").minimum_key_bits == 2048
    assert verifier("MinimumKeyBits 512\n").minimum_key_bits == 512
    fix = (
        "use 1024 or more (RFC 8301); ldapdkim refuses keys under 512 bits, "
        "and OpenDKIM's 0 (any size) is not accepted"
    )
    assert verifier_error("MinimumKeyBits 0\n") == (
        f"t.conf:2: MinimumKeyBits '0' is less than 512; {fix}"
    )
    assert verifier_error("MinimumKeyBits 2k\n") == (
        f"t.conf:2: MinimumKeyBits '2k' is not a whole number; {fix}"
    )


def test_maximum_signatures_to_verify() -> None:
    assert verifier("MaximumSignaturesToVerify 10\n").maximum_signatures_to_verify == 10
    assert verifier_error("MaximumSignaturesToVerify 0\n") == (
        "t.conf:2: MaximumSignaturesToVerify '0' is less than 1; "
        "give 1 or more (the default is 3); use 'Mode s' to verify none"
    )


# Mode and Socket ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mode", "signs", "verifies"),
    [("s", "s", True, False), ("v", "v", False, True), ("sv", "sv", True, True),
     ("vs", "sv", True, True), ("SV", "sv", True, True)],
)  # fmt: skip
def test_modes(workdir: Path, text: str, mode: str, signs: bool, verifies: bool) -> None:
    (workdir / "keys.ldif").write_text("version: 1\n")
    settings = conf(f"Mode {text}\nDirectory ldif:keys.ldif\n")
    assert (settings.mode, settings.signs, settings.verifies) == (mode, signs, verifies)


def test_bad_mode() -> None:
    assert error("Mode sign\n") == (
        "t.conf:1: Mode 'sign' is not a mode; use s (sign), v (verify) or sv (both)"
    )


@pytest.mark.parametrize(
    "socket",
    [
        "inet:8891@127.0.0.1",
        "inet:8891",
        "inet:8891@localhost",
        "inet:8891@[192.0.2.1]",
        "inet6:8891@::1",
        "inet6:8891@[2001:db8::25]",
        "inet6:8891",
        "local:/run/ldapdkim/ldapdkim.sock",
        "unix:/var/spool/postfix/ldapdkim/ldapdkim.sock",
    ],
)
def test_socket_forms(socket: str) -> None:
    assert verifier(f"Socket {socket}\n").socket == socket


def test_socket_kind_is_case_insensitive() -> None:
    assert verifier("Socket INET:8891@127.0.0.1\n").socket == "inet:8891@127.0.0.1"


FORMS = "use inet:PORT@HOST, inet:PORT, inet6:PORT@HOST, local:/PATH or unix:/PATH"


@pytest.mark.parametrize(
    ("socket", "message"),
    [
        ("8891", f"Socket '8891' is not a socket; {FORMS}"),
        ("tcp:8891@127.0.0.1", f"Socket 'tcp:8891@127.0.0.1' is not a socket; {FORMS}"),
        ("inet:@127.0.0.1", f"Socket 'inet:@127.0.0.1' has no valid port (1-65535); {FORMS}"),
        ("inet:0", f"Socket 'inet:0' has no valid port (1-65535); {FORMS}"),
        ("inet:70000", f"Socket 'inet:70000' has no valid port (1-65535); {FORMS}"),
        ("inet:8891@bad host", f"Socket 'inet:8891@bad host' has a bad host 'bad host'; {FORMS}"),
        ("local:", f"Socket 'local:' names no path; {FORMS}"),
        (
            "inet:8891@::1",
            "Socket 'inet:8891@::1' puts an IPv6 address on inet:; "
            "use inet: for IPv4 and inet6: for IPv6",
        ),
    ],
)
def test_bad_sockets(socket: str, message: str) -> None:
    assert verifier_error(f"Socket {socket}\n") == f"t.conf:2: {message}"


# Directory -------------------------------------------------------------------------


def test_ldap_url_with_base_dn() -> None:
    directory = verifier("Directory ldap://ldap.example.com/ou=dkim,dc=example,dc=com\n").directory
    assert directory == DirectorySource(
        kind="ldap",
        uris=("ldap://ldap.example.com:389",),
        base_dn="ou=dkim,dc=example,dc=com",
        ldif_path=None,
    )


def test_ldaps_url_gets_its_default_port_and_keeps_an_explicit_one() -> None:
    directory = verifier(
        "Directory ldaps://LDAP1.example.com/dc=example,dc=com "
        "ldaps://ldap2.example.com:10636/dc=example,dc=com\n"
    ).directory
    assert directory is not None
    assert directory.uris == ("ldaps://ldap1.example.com:636", "ldaps://ldap2.example.com:10636")


def test_ip_addresses_as_ldap_servers() -> None:
    directory = verifier(
        "Directory ldap://192.0.2.10/dc=example,dc=com "
        "ldap://[2001:db8::10]:3389/dc=example,dc=com\n"
    ).directory
    assert directory is not None
    assert directory.uris == ("ldap://192.0.2.10:389", "ldap://[2001:db8::10]:3389")


def test_ldapi_url_keeps_the_socket_path() -> None:
    directory = verifier(
        "Directory ldapi://%2Fvar%2Frun%2Fslapd%2Fldapi/ou=dkim,dc=example,dc=com\n"
    ).directory
    assert directory is not None
    assert directory.uris == ("ldapi://%2Fvar%2Frun%2Fslapd%2Fldapi",)
    assert directory.base_dn == "ou=dkim,dc=example,dc=com"


def test_ldapi_url_without_path_means_the_default_socket() -> None:
    directory = verifier("Directory ldapi:///dc=example,dc=com\n").directory
    assert directory is not None
    assert directory.uris == ("ldapi://",)


def test_base_dn_is_percent_decoded() -> None:
    directory = verifier("Directory ldap://h.example/ou=DKIM%20keys,dc=example,dc=com\n").directory
    assert directory is not None
    assert directory.base_dn == "ou=DKIM keys,dc=example,dc=com"


def test_several_urls_keep_failover_order_and_share_the_base_dn() -> None:
    directory = verifier(
        "Directory ldap://b.example/dc=example,dc=com ldap://a.example/DC=Example,DC=com "
        "ldapi://%2Frun%2Fldapi/dc=example,dc=com\n"
    ).directory
    assert directory is not None
    assert directory.uris == (
        "ldap://b.example:389",
        "ldap://a.example:389",
        "ldapi://%2Frun%2Fldapi",
    )
    assert directory.base_dn == "dc=example,dc=com"


DIRECTORY_FORMS = (
    "use ldap://HOST[:PORT]/BASE-DN, ldaps://HOST[:PORT]/BASE-DN, "
    "ldapi://%2Fpath%2Fto%2Fsocket/BASE-DN (several servers separated by blanks), or ldif:PATH"
)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "ldap://a.example/dc=example,dc=com ldap://b.example/dc=example,dc=org",
            "Directory URLs name different base DNs ('dc=example,dc=com' and "
            "'dc=example,dc=org'); all servers are replicas of one tree: give every URL "
            "the same base DN",
        ),
        (
            "ldap://ldap.example.com",
            "Directory URL 'ldap://ldap.example.com' has no base DN; append the DN under which "
            "the DKIM entries live, e.g. ldap://ldap.example.com/ou=dkim,dc=example,dc=com",
        ),
        (
            "ldap://ldap.example.com/",
            "Directory URL 'ldap://ldap.example.com/' has no base DN; append the DN under which "
            "the DKIM entries live, e.g. ldap://ldap.example.com/ou=dkim,dc=example,dc=com",
        ),
        (
            "ldap://ldap.example.com/not-a-dn",
            "Directory base DN 'not-a-dn' is not a valid DN; write it like "
            "ou=dkim,dc=example,dc=com, with %20 for blanks",
        ),
        (
            "ldap:///dc=example,dc=com",
            "Directory URL 'ldap:///dc=example,dc=com' names no server; "
            "write ldap://HOST/BASE-DN; for the local socket use ldapi://",
        ),
        (
            "ldap://ldap.example.com/ou=people,dc=example,dc=com?DKIMSelector?sub?(DKIMIdentity=$d)",
            "Directory URL 'ldap://ldap.example.com/ou=people,dc=example,dc=com?DKIMSelector?sub?"
            "(DKIMIdentity=$d)' has attributes, scope or filter ('?DKIMSelector?sub?"
            "(DKIMIdentity=$d)'); ldapdkim takes only the base DN from the URL: remove "
            "everything from '?' (OpenDKIM KeyTable/SigningTable URLs do not carry over)",
        ),
        (
            "ldap://ldap.example.com/$D",
            "Directory base DN '$D' holds an OpenDKIM placeholder ($d/$D); give the fixed DN "
            "under which the DKIM entries live, e.g. ou=dkim,dc=example,dc=com",
        ),
        ("ldap.example.com", f"Directory 'ldap.example.com' is not an LDAP URL; {DIRECTORY_FORMS}"),
        (
            "http://ldap.example.com/dc=example",
            f"Directory 'http://ldap.example.com/dc=example' is not an LDAP URL; {DIRECTORY_FORMS}",
        ),
        (
            "ldap://ldap.example.com:0/dc=example",
            "Directory URL 'ldap://ldap.example.com:0/dc=example' has a bad port '0'; "
            "use a port from 1 to 65535",
        ),
        (
            "ldap://2001:db8::1/dc=example",
            "Directory URL 'ldap://2001:db8::1/dc=example' has an IPv6 address without "
            "brackets; write ldap://[2001:db8::1]:PORT/BASE-DN",
        ),
        (
            "ldaps://[192.0.2.1]/dc=example",
            "Directory URL 'ldaps://[192.0.2.1]/dc=example' puts an IPv4 address in brackets; "
            "write ldaps://192.0.2.1/BASE-DN",
        ),
        (
            "ldap://bad_host!/dc=example",
            "Directory URL 'ldap://bad_host!/dc=example' has a bad host 'bad_host!'; "
            + DIRECTORY_FORMS,
        ),
        (
            "ldapi://run%2Fldapi/dc=example",
            "Directory URL 'ldapi://run%2Fldapi/dc=example' has a relative socket path "
            "'run/ldapi'; write the absolute path with / as %2F, "
            "e.g. ldapi://%2Frun%2Fslapd%2Fldapi/dc=example",
        ),
        (
            "ldap://a.example/dc=example ldap://A.example/dc=example",
            "Directory names server ldap://a.example:389 twice; remove the duplicate",
        ),
        (
            "ldap://a.example/dc=example ldif:keys.ldif",
            "Directory mixes an ldif: file with LDAP URLs; give either LDAP URLs or one ldif:PATH",
        ),
    ],
)
def test_bad_directory(value: str, message: str) -> None:
    assert verifier_error(f"Directory {value}\n") == f"t.conf:2: {message}"


def test_ldif_directory_is_a_file_relative_to_the_working_directory(workdir: Path) -> None:
    (workdir / "keys.ldif").write_text("version: 1\n")
    assert verifier("Directory ldif:keys.ldif\n").directory == DirectorySource(
        kind="ldif", uris=(), base_dn="", ldif_path=workdir / "keys.ldif"
    )


def test_missing_ldif_file(workdir: Path) -> None:
    assert verifier_error("Directory ldif:keys.ldif\n") == (
        f"t.conf:2: Directory file 'keys.ldif' ({workdir}/keys.ldif) does not exist; "
        "create the LDIF file (ldapdkim genkey or ldapdkim provision) or fix the path; "
        "relative paths are taken from the directory ldapdkim is started in"
    )


def test_ldif_directory_must_be_a_file(workdir: Path) -> None:
    assert verifier_error(f"Directory ldif:{workdir}\n").startswith(
        f"t.conf:2: Directory file '{workdir}' is not a file; "
    )


def test_ldif_without_a_path() -> None:
    assert verifier_error("Directory ldif:\n") == (
        "t.conf:2: Directory ldif: names no file; write ldif:/path/to/keys.ldif"
    )


# Binding to the directory ------------------------------------------------------------

DIRECTORY = "Directory ldap://ldap.example.com/dc=example,dc=com\n"
BIND_USER = "LDAPBindUser cn=ldapdkim,ou=services,dc=example,dc=com\n"


def test_bind_password_in_the_file_is_a_secret() -> None:
    settings = verifier(DIRECTORY + BIND_USER + "LDAPBindPassword s3cr3t!\n")
    assert settings.ldap_bind_user == "cn=ldapdkim,ou=services,dc=example,dc=com"
    assert isinstance(settings.ldap_bind_password, Secret)
    assert settings.ldap_bind_password.reveal() == "s3cr3t!"


def test_bind_password_file_gives_its_first_line(workdir: Path) -> None:
    (workdir / "bindpw").write_text("pass word#1\r\nsecond line\n")
    settings = verifier(DIRECTORY + BIND_USER + "LDAPBindPasswordFile bindpw\n")
    assert settings.ldap_bind_password == Secret("pass word#1")


def test_missing_bind_password_file(workdir: Path) -> None:
    assert verifier_error(DIRECTORY + BIND_USER + "LDAPBindPasswordFile /nonexistent/bindpw\n") == (
        "t.conf:4: LDAPBindPasswordFile file '/nonexistent/bindpw' does not exist; create it "
        "with the bind password on its first line, readable by root only, or fix the path"
    )


def test_empty_bind_password_file(workdir: Path) -> None:
    (workdir / "bindpw").write_text("\nsecret on the wrong line\n")
    assert verifier_error(DIRECTORY + BIND_USER + "LDAPBindPasswordFile bindpw\n").startswith(
        f"t.conf:4: LDAPBindPasswordFile 'bindpw' ({workdir}/bindpw) has an empty first line; "
    )


def test_bind_password_and_password_file_exclude_each_other(workdir: Path) -> None:
    (workdir / "bindpw").write_text("x\n")
    text = DIRECTORY + BIND_USER + "LDAPBindPasswordFile bindpw\nLDAPBindPassword s3cr3t\n"
    message = verifier_error(text)
    assert message == (
        "t.conf:5: LDAPBindPassword and LDAPBindPasswordFile (line 4) are both given; keep one "
        "(LDAPBindPasswordFile keeps the password out of the configuration file)"
    )
    assert "s3cr3t" not in message


def test_bind_user_needs_a_password() -> None:
    assert verifier_error(DIRECTORY + BIND_USER) == (
        "t.conf:3: LDAPBindUser is given without a password; add LDAPBindPasswordFile "
        "(or LDAPBindPassword), or set LDAPAuthMechanism EXTERNAL to bind with a TLS client "
        "certificate or over ldapi://"
    )


def test_a_password_needs_a_bind_user() -> None:
    assert verifier_error(DIRECTORY + "LDAPBindPassword s3cr3t\n") == (
        "t.conf:3: LDAPBindPassword is given without LDAPBindUser; add LDAPBindUser with the "
        "DN to bind as, or remove the password to bind anonymously"
    )


def test_external_bind_needs_no_password() -> None:
    settings = verifier(DIRECTORY + BIND_USER + "LDAPAuthMechanism external\n")
    assert settings.ldap_auth_mechanism == "EXTERNAL"


def test_anonymous_bind() -> None:
    settings = verifier(DIRECTORY)
    assert (settings.ldap_bind_user, settings.ldap_bind_password) == (None, None)


ADMIN_USER = "LDAPAdminBindUser cn=admin,dc=example,dc=com\n"


def test_admin_bind_for_key_rotation_reads_its_password_from_a_file(workdir: Path) -> None:
    (workdir / "adminpw").write_text("4dm1n\n")
    settings = verifier(DIRECTORY + ADMIN_USER + "LDAPAdminBindPasswordFile adminpw\n")
    assert settings.ldap_admin_bind_user == "cn=admin,dc=example,dc=com"
    assert settings.ldap_admin_bind_password == Secret("4dm1n")
    assert "4dm1n" not in repr(settings)


def test_admin_bind_user_needs_its_password_file() -> None:
    assert verifier_error(DIRECTORY + ADMIN_USER) == (
        "t.conf:3: LDAPAdminBindUser is given without LDAPAdminBindPasswordFile; 'ldapdkim "
        "rotate' binds with both (a simple bind), so add the other, or remove both to write "
        "as LDAPBindUser"
    )


def test_admin_password_file_errors_name_their_keyword(workdir: Path) -> None:
    (workdir / "adminpw").write_text("\n")
    assert verifier_error(
        DIRECTORY + ADMIN_USER + "LDAPAdminBindPasswordFile adminpw\n"
    ).startswith(f"t.conf:4: LDAPAdminBindPasswordFile 'adminpw' ({workdir}/adminpw) has an empty")


def test_rotation_windows_take_durations() -> None:
    settings = verifier("RotationOverlap 36h\nRotationRetireAfter 0\n")
    assert (settings.rotation_overlap, settings.rotation_retire_after) == (36 * 3600.0, 0.0)


def test_bind_keywords_do_not_matter_for_an_ldif_directory(workdir: Path) -> None:
    (workdir / "keys.ldif").write_text("version: 1\n")
    settings = verifier("Directory ldif:keys.ldif\n" + BIND_USER + "LDAPUseTLS yes\n")
    assert settings.ldap_bind_user is not None


@pytest.mark.parametrize(
    ("text", "mechanism"),
    [("SIMPLE", None), ("simple", None), ("EXTERNAL", "EXTERNAL"), ("digest-md5", "DIGEST-MD5"),
     ("GSSAPI", "GSSAPI"), ("SCRAM-SHA-256", "SCRAM-SHA-256")],
)  # fmt: skip
def test_auth_mechanisms(text: str, mechanism: str | None) -> None:
    assert verifier(f"LDAPAuthMechanism {text}\n").ldap_auth_mechanism == mechanism


def test_bad_auth_mechanism() -> None:
    assert verifier_error("LDAPAuthMechanism digest md5\n") == (
        "t.conf:2: LDAPAuthMechanism 'digest md5' is not a SASL mechanism name; use SIMPLE "
        "(the default), EXTERNAL, or a SASL mechanism such as GSSAPI or DIGEST-MD5"
    )


def test_sasl_identities_keep_their_opendkim_meaning() -> None:
    settings = verifier(
        "LDAPAuthMechanism DIGEST-MD5\nLDAPAuthName ldapdkim\nLDAPAuthUser u:admin\n"
        "LDAPAuthRealm EXAMPLE.COM\n"
    )
    assert settings.ldap_auth_user == "ldapdkim"  # authcid, as OpenDKIM's LDAPAuthName
    assert settings.ldap_authz_id == "u:admin"  # authzid, as OpenDKIM's LDAPAuthUser
    assert settings.ldap_auth_realm == "EXAMPLE.COM"


def test_starttls_and_ca_file(workdir: Path) -> None:
    (workdir / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    settings = verifier("LDAPUseTLS yes\nLDAPTLSCACertFile ca.pem\n")
    assert settings.ldap_use_tls is True
    assert settings.ldap_tls_ca_cert_file == workdir / "ca.pem"


def test_missing_ca_file(workdir: Path) -> None:
    assert verifier_error("LDAPTLSCACertFile /nonexistent/ca.pem\n") == (
        "t.conf:2: LDAPTLSCACertFile file '/nonexistent/ca.pem' does not exist; "
        "give the PEM file of the CA that signed the LDAP server's certificate"
    )


# Secrets are never shown -------------------------------------------------------------


def test_secret_repr_and_str_hide_the_value() -> None:
    secret = Secret("hunter2")
    assert repr(secret) == "Secret('***')"
    assert str(secret) == "Secret('***')"
    assert f"{secret}" == "Secret('***')"
    assert secret.reveal() == "hunter2"


def test_settings_repr_hides_the_bind_password(workdir: Path) -> None:
    settings = verifier(DIRECTORY + BIND_USER + "LDAPBindPassword hunter2\n")
    assert "hunter2" not in repr(settings)
    assert "Secret('***')" in repr(settings)
    (workdir / "bindpw").write_text("hunter3\n")
    settings = verifier(DIRECTORY + BIND_USER + "LDAPBindPasswordFile bindpw\n")
    assert "hunter3" not in repr(settings)


@pytest.mark.parametrize(
    "text",
    [
        "LDAPBindPasword hunter2\n",  # misspelt keyword: the value is not echoed
        "LDAPBindPassword hunter2\nSyslog maybe\n",
        DIRECTORY + "LDAPBindPassword hunter2\n",
        DIRECTORY + BIND_USER + "LDAPBindPassword hunter2\nLDAPBindPasswordFile /nonexistent\n",
    ],
)
def test_errors_never_show_the_bind_password(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        verifier(text)
    assert "hunter2" not in str(caught.value)


# Signing ---------------------------------------------------------------------------


def test_canonicalization() -> None:
    assert verifier("Canonicalization relaxed/simple\n").canonicalization == Canonicalization(
        "relaxed", "simple"
    )
    assert verifier("Canonicalization Relaxed\n").canonicalization == Canonicalization(
        "relaxed", "simple"
    )


def test_bad_canonicalization() -> None:
    assert verifier_error("Canonicalization relaxed/loose\n") == (
        "t.conf:2: Canonicalization 'relaxed/loose' is not valid; "
        "use HEADER/BODY, each simple or relaxed, e.g. relaxed/simple"
    )


def test_sign_headers_are_lowercased_and_from_is_always_signed() -> None:
    assert verifier("SignHeaders To, Subject,Date Message-ID\n").sign_headers == (
        "from",
        "to",
        "subject",
        "date",
        "message-id",
    )
    assert verifier("SignHeaders subject,From,subject\n").sign_headers == ("subject", "from")


def test_sign_headers_from_a_file(workdir: Path) -> None:
    (workdir / "headers").write_text("# signed\nFrom\nTo\n")
    assert verifier("SignHeaders file:headers\n").sign_headers == ("from", "to")


def test_bad_header_name() -> None:
    assert verifier_error("SignHeaders from, x:y\n") == (
        "t.conf:2: SignHeaders entry 'x:y' is not a header field name; "
        "list names such as from, to, subject, separated by commas"
    )


def test_opendkim_delta_lists_are_refused() -> None:
    assert verifier_error("SignHeaders *,+list-id\n") == (
        "t.conf:2: SignHeaders starts an OpenDKIM delta list ('*,+X,-Y'); "
        "ldapdkim does not support those: list the header fields in full"
    )


def test_oversign_headers_can_be_emptied() -> None:
    assert verifier("OversignHeaders from, to, Subject\n").oversign_headers == (
        "from",
        "to",
        "subject",
    )
    assert verifier("OversignHeaders csl:\n").oversign_headers == ()


def test_unsupported_data_set_kind() -> None:
    assert verifier_error("SignHeaders db:/etc/headers.db\n") == (
        "t.conf:2: SignHeaders: OpenDKIM data set type 'db:' is not supported by ldapdkim; "
        "use a comma list, csl:LIST, file:PATH"
    )


def test_refile_only_for_host_lists() -> None:
    assert verifier_error("SignHeaders refile:/etc/headers\n") == (
        "t.conf:2: SignHeaders: refile: (wildcard patterns) only applies to host lists; "
        "use a comma list, csl:LIST or file:PATH"
    )


def test_subdomains() -> None:
    assert verifier("SubDomains yes\n").subdomains is True


# Single-key mode: Domain, Selector, KeyFile ---------------------------------------------


@pytest.fixture
def key_file(workdir: Path) -> Path:
    path = workdir / "mail.private"
    path.write_text("-----BEGIN PRIVATE KEY-----\n")
    return path


def test_single_key_mode(key_file: Path) -> None:
    settings = conf("Domain Example.COM, bücher.example\nSelector Mail2026\nKeyFile mail.private\n")
    assert settings.signs
    assert settings.domain == ("example.com", "xn--bcher-kva.example")
    assert settings.selector == "mail2026"
    assert settings.key_file == key_file


def test_domains_from_a_file(key_file: Path, workdir: Path) -> None:
    (workdir / "domains").write_text("example.com\nexample.net # second\n")
    settings = conf("Domain file:domains\nSelector s\nKeyFile mail.private\n")
    assert settings.domain == ("example.com", "example.net")


def test_bad_domain(key_file: Path) -> None:
    message = error("Domain exa_mple.com\nSelector s\nKeyFile mail.private\n")
    assert message.startswith("t.conf:1: Domain entry 'exa_mple.com' is not a domain name (")
    assert message.endswith("); list domains such as example.com, separated by commas")


def test_empty_domain_list(key_file: Path) -> None:
    assert error("Domain csl:\nSelector s\nKeyFile mail.private\n") == (
        "t.conf:1: Domain lists no domain; name at least one, e.g. Domain example.com"
    )


def test_bad_selector(key_file: Path) -> None:
    assert error("Domain example.com\nSelector mail 2026\nKeyFile mail.private\n").startswith(
        "t.conf:2: Selector 'mail 2026' is not a valid selector ("
    )


def test_missing_key_file(workdir: Path) -> None:
    assert error("Domain example.com\nSelector s\nKeyFile mail.private\n") == (
        f"t.conf:3: KeyFile file 'mail.private' ({workdir}/mail.private) does not exist; "
        "fix the path, or create the key (ldapdkim genkey) and publish its DNS record"
    )


def test_domain_selector_and_key_file_go_together(key_file: Path) -> None:
    assert error("Mode sv\nSelector s\nKeyFile mail.private\n") == (
        "t.conf:2: Selector and KeyFile given without Domain; single-key signing needs "
        "Domain, Selector and KeyFile together, or use Directory instead"
    )
    assert verifier_error("Domain example.com\n") == (
        "t.conf:2: Domain given without Selector and KeyFile; single-key signing needs "
        "Domain, Selector and KeyFile together, or use Directory instead"
    )


def test_single_key_keywords_and_directory_exclude_each_other(key_file: Path) -> None:
    assert error(
        "Directory ldap://ldap.example.com/dc=example,dc=com\n"
        "Domain example.com\nSelector s\nKeyFile mail.private\n"
    ) == (
        "t.conf:2: Domain cannot be combined with Directory (line 1); use one or the other: "
        "Directory for keys in LDAP or an LDIF file, or Domain, Selector and KeyFile for a "
        "single key file"
    )


def test_signing_needs_keys() -> None:
    assert error("Mode s\n") == (
        "t.conf:1: Mode s, which signs, but there are no keys (neither Directory nor Domain, "
        "Selector and KeyFile); add Directory (ldap://HOST/BASE-DN or ldif:PATH) or Domain, "
        "Selector and KeyFile, or set 'Mode v' to verify only"
    )


def test_signing_by_default_needs_keys() -> None:
    assert error("Syslog no\n") == (
        "t.conf: Mode is sv by default, which signs, but there are no keys (neither Directory "
        "nor Domain, Selector and KeyFile); add Directory (ldap://HOST/BASE-DN or ldif:PATH) "
        "or Domain, Selector and KeyFile, or set 'Mode v' to verify only"
    )


def test_verifying_needs_no_keys() -> None:
    assert not verifier().signs


# Host lists and macros -------------------------------------------------------------------


def test_internal_hosts_replace_the_default() -> None:
    settings = verifier("InternalHosts 192.0.2.0/24\n")
    assert settings.internal_hosts.matches("192.0.2.5")
    assert not settings.internal_hosts.matches("127.0.0.1")


def test_default_internal_hosts_are_the_loopback_addresses() -> None:
    internal = verifier().internal_hosts
    assert internal.matches("127.0.0.1")
    assert internal.matches("::1")
    assert internal.matches("::ffff:127.0.0.1")
    assert not internal.matches("127.0.0.2")


def test_peer_list_and_external_ignore_list(workdir: Path) -> None:
    (workdir / "peers").write_text("*.relay.example.net\n")
    settings = verifier(
        "PeerList refile:peers\nExternalIgnoreList .partner.example, !bad.partner.example\n"
    )
    assert settings.peer_list.matches(None, "a.relay.example.net")
    assert settings.external_ignore_list.matches(None, "mx.partner.example")
    assert not settings.external_ignore_list.matches(None, "bad.partner.example")


def test_bad_host_list_entry_names_file_line_and_keyword() -> None:
    assert verifier_error("InternalHosts 127.0.0.1, 10.0.0.256\n").startswith(
        "t.conf:2: InternalHosts: bad entry '10.0.0.256': not an IP address or network; use "
    )


def test_missing_host_list_file(workdir: Path) -> None:
    assert verifier_error("PeerList file:peers\n") == (
        f"t.conf:2: PeerList: file 'peers' ({workdir}/peers) does not exist; "
        "create it with one entry per line, or fix the path"
    )


def test_macro_list() -> None:
    settings = verifier("MacroList {auth_authen}, daemon_name=ORIGINATING|SUBMISSION, i\n")
    assert settings.macro_list == (
        ("{auth_authen}", ()),
        ("{daemon_name}", ("ORIGINATING", "SUBMISSION")),
        ("i", ()),
    )


def test_macro_list_file_takes_opendkim_key_value_lines(workdir: Path) -> None:
    (workdir / "macros").write_text("{daemon_name} ORIGINATING\n{auth_type}=PLAIN|LOGIN\n")
    assert verifier("MacroList file:macros\n").macro_list == (
        ("{daemon_name}", ("ORIGINATING",)),
        ("{auth_type}", ("PLAIN", "LOGIN")),
    )


def test_macro_list_can_be_emptied() -> None:
    assert verifier("MacroList csl:\n").macro_list == ()


MACRO_FORMS = "write NAME or NAME=VALUE1|VALUE2, e.g. {auth_authen}, {daemon_name}=ORIGINATING"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{auth authen}", "MacroList entry '{auth' has a bad macro name '{auth'"),
        ("daemon_name=", "MacroList entry 'daemon_name=' has an empty value"),
        ("daemon_name=A||B", "MacroList entry 'daemon_name=A||B' has an empty value"),
        ("=x", "MacroList entry '=x' has a bad macro name ''"),
        ("{auth}x=y", "MacroList entry '{auth}x=y' has a bad macro name '{auth}x'"),
    ],
)
def test_bad_macro_list(value: str, message: str) -> None:
    assert verifier_error(f"MacroList {value}\n") == f"t.conf:2: {message}; {MACRO_FORMS}"


def test_macro_named_twice() -> None:
    assert verifier_error("MacroList daemon_name, {daemon_name}=X\n") == (
        "t.conf:2: MacroList names macro {daemon_name} twice; merge the values with |"
    )


# Verifying --------------------------------------------------------------------------


def test_authserv_id() -> None:
    assert verifier("AuthservID mail.example.com\n").authserv_id == "mail.example.com"
    assert verifier("AuthservID HOSTNAME\n").authserv_id is None  # OpenDKIM: this host's name


def test_bad_authserv_id() -> None:
    assert verifier_error("AuthservID mail; example\n") == (
        "t.conf:2: AuthservID 'mail; example' is not a valid authserv-id; "
        "use a host name such as mail.example.com (RFC 8601 §2.5)"
    )


def test_nameservers() -> None:
    assert verifier(
        "Nameservers 192.0.2.53, 192.0.2.54:5353 [2001:db8::53]:5353,2001:db8::54 [::1]\n"
    ).nameservers == (
        ("192.0.2.53", 53),
        ("192.0.2.54", 5353),
        ("2001:db8::53", 5353),
        ("2001:db8::54", 53),
        ("::1", 53),
    )


NAMESERVER_FORMS = "use IPv4, IPv4:PORT, IPv6 or [IPv6]:PORT, separated by commas or blanks"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("dns.example.com", "Nameservers entry 'dns.example.com' is not an IP address"),
        ("192.0.2.300", "Nameservers entry '192.0.2.300' is not an IP address"),
        ("192.0.2.53:0", "Nameservers entry '192.0.2.53:0' has a bad port"),
        ("192.0.2.53:99999", "Nameservers entry '192.0.2.53:99999' has a bad port"),
        ("[192.0.2.53]:53", "Nameservers entry '[192.0.2.53]:53' puts IPv4 in brackets"),
    ],
)
def test_bad_nameservers(value: str, message: str) -> None:
    assert verifier_error(f"Nameservers {value}\n") == f"t.conf:2: {message}; {NAMESERVER_FORMS}"


# Process and logging ---------------------------------------------------------------------


def test_process_keywords(workdir: Path) -> None:
    settings = verifier(
        "UserID ldapdkim:mail\nPidFile run/ldapdkim.pid\nUMask 007\nSyslogFacility LOCAL3\n"
        "SyslogSuccess yes\nSoftwareHeader yes\n"
    )
    assert settings.user_id == "ldapdkim:mail"
    assert settings.pid_file == workdir / "run/ldapdkim.pid"
    assert settings.umask == 0o007
    assert settings.syslog_facility == "local3"
    assert (settings.syslog_success, settings.software_header) == (True, True)


@pytest.mark.parametrize(
    ("text", "mask"), [("0", 0), ("022", 0o22), ("0o027", 0o27), ("0777", 0o777)]
)
def test_umask_is_octal(text: str, mask: int) -> None:
    assert verifier(f"UMask {text}\n").umask == mask


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("UMask 008", "UMask '008' is not an octal mask; write e.g. 007 or 022"),
        ("UMask 1777", "UMask '1777' is not an octal mask; write e.g. 007 or 022"),
        ("UserID a:b:c", "UserID 'a:b:c' is not a user; write USER or USER:GROUP, e.g. ldapdkim"),
        (
            "SyslogFacility email",
            "SyslogFacility 'email' is not a syslog facility; use mail (the default), daemon, "
            "local0 ... local7 or another syslog.conf(5) name",
        ),
    ],
)
def test_bad_process_values(line: str, message: str) -> None:
    assert verifier_error(line + "\n") == f"t.conf:2: {message}"


# Actions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "action"),
    [("accept", Action.ACCEPT), ("a", Action.ACCEPT), ("discard", Action.DISCARD),
     ("D", Action.DISCARD), ("quarantine", Action.QUARANTINE), ("q", Action.QUARANTINE),
     ("Reject", Action.REJECT), ("r", Action.REJECT), ("tempfail", Action.TEMPFAIL),
     ("t", Action.TEMPFAIL)],
)  # fmt: skip
def test_action_names_and_letters(text: str, action: Action) -> None:
    assert verifier(f"On-BadSignature {text}\n").action_for(Outcome.BAD_SIGNATURE) is action


def test_on_default_sets_every_action_not_given_in_any_order() -> None:
    settings = verifier("On-NoSignature accept\nOn-Default reject\n")
    assert settings.action_for(Outcome.NO_SIGNATURE) is Action.ACCEPT
    assert settings.action_for(Outcome.DEFAULT) is Action.REJECT
    assert {
        name: action for name, action in settings.on_actions.items() if name != "nosignature"
    } == dict.fromkeys(set(ACTION_DEFAULTS) - {"nosignature"}, Action.REJECT)


def test_every_on_keyword_sets_its_action() -> None:
    settings = verifier(
        "On-BadSignature r\nOn-DNSError a\nOn-InternalError a\nOn-KeyNotFound q\n"
        "On-NoSignature d\nOn-SignatureError t\nOn-DirectoryError accept\n"
        "On-SenderMismatch reject\n"
    )
    assert dict(settings.on_actions) == {
        "default": Action.ACCEPT,
        "badsignature": Action.REJECT,
        "dnserror": Action.ACCEPT,
        "internalerror": Action.ACCEPT,
        "keynotfound": Action.QUARANTINE,
        "nosignature": Action.DISCARD,
        "signatureerror": Action.TEMPFAIL,
        "directoryerror": Action.ACCEPT,
        "sendermismatch": Action.REJECT,
    }


def test_action_for_accepts_the_keyword_spelling() -> None:
    settings = verifier()
    assert settings.action_for(Outcome.parse("On-DNSError")) is Action.TEMPFAIL
    assert settings.action_for(Outcome.parse("DirectoryError")) is Action.TEMPFAIL


def test_action_for_an_unknown_outcome() -> None:
    with pytest.raises(ValueError, match=r"^unknown outcome 'Security'; use one of badsignature, "):
        verifier().action_for(Outcome.parse("Security"))


def test_actions_cannot_be_changed() -> None:
    with pytest.raises(TypeError):
        verifier().on_actions["badsignature"] = Action.REJECT  # type: ignore[index]


def test_bad_action() -> None:
    assert verifier_error("On-BadSignature bounce\n") == (
        "t.conf:2: On-BadSignature 'bounce' is not an action; "
        "use accept (a), discard (d), quarantine (q), reject (r) or tempfail (t)"
    )


# Loading files -----------------------------------------------------------------------------


def test_load_reads_the_file_and_names_it_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "ldapdkim.conf"
    path.write_text("Mode v\nSyslog no\n")
    settings = load(path)
    assert (settings.source, settings.syslog) == (str(path), False)
    path.write_text("Mode v\n\nSylog no\n")
    with pytest.raises(ConfigError, match=r"^.*/ldapdkim\.conf:3: unknown keyword 'Sylog'; "):
        load(str(path))


def test_missing_configuration_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path / "nope.conf")
    assert str(caught.value) == (
        f"{tmp_path}/nope.conf: configuration file not found; check the path, or start from "
        "the commented sample conf/ldapdkim.conf"
    )


def test_configuration_path_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path)
    assert str(caught.value) == f"{tmp_path}: is a directory; name the configuration file"


def test_configuration_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.conf"
    path.write_bytes(b"Mode v\nAuthservID caf\xe9\n")
    with pytest.raises(
        ConfigError, match=r"latin1\.conf: not UTF-8 text \(.*\); save it as UTF-8$"
    ):
        load(path)


# RequireSafeKeys -----------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_password_file_others_or_the_group_can_read_is_refused(workdir: Path, mode: int) -> None:
    (workdir / "bindpw").write_text("s3cret\n")
    (workdir / "bindpw").chmod(mode)
    assert verifier_error(DIRECTORY + BIND_USER + "LDAPBindPasswordFile bindpw\n") == (
        f"t.conf:4: LDAPBindPasswordFile {workdir}/bindpw is readable by group or others "
        f"(mode {mode:04o}); chmod 600 {workdir}/bindpw and let root or the user ldapdkim "
        "starts as own it, or set RequireSafeKeys no"
    )


def test_a_key_file_of_another_user_is_refused(workdir: Path) -> None:
    key = workdir / "k.private"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    os.chown(key, 65534, 65534)  # the tests run as root
    text = "Domain example.com\nSelector s1\nKeyFile k.private\n"
    with pytest.raises(ConfigError, match=r"t.conf:3: KeyFile .* belongs to uid 65534"):
        parse(text, "t.conf")


def test_a_key_file_in_a_directory_others_can_write_is_refused(workdir: Path) -> None:
    """Anyone could put another key in its place: OpenDKIM refuses it too."""
    shared = workdir / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    (shared / "k.private").write_text("-----BEGIN PRIVATE KEY-----\n")
    (shared / "k.private").chmod(0o600)
    text = "Domain example.com\nSelector s1\nKeyFile shared/k.private\n"
    with pytest.raises(ConfigError) as refused:
        parse(text, "t.conf")
    assert str(refused.value) == (
        f"t.conf:3: KeyFile {shared}/k.private is in {shared}, which others can write to "
        "(mode 0777); move it to a directory only root and the user ldapdkim starts as can "
        "change, or set RequireSafeKeys no"
    )


def test_a_sticky_directory_such_as_tmp_is_accepted(workdir: Path) -> None:
    """Declared difference: with the sticky bit no one else may rename or remove the file."""
    shared = workdir / "sticky"
    shared.mkdir()
    shared.chmod(0o1777)
    (shared / "bindpw").write_text("s3cret\n")
    (shared / "bindpw").chmod(0o600)
    settings = verifier(DIRECTORY + BIND_USER + "LDAPBindPasswordFile sticky/bindpw\n")
    assert settings.ldap_bind_password == Secret("s3cret")


def test_a_directory_its_group_can_write_is_refused_when_the_group_has_other_users(
    workdir: Path,
) -> None:
    nogroup = grp.getgrnam("nogroup").gr_gid  # the nobody user's own group
    team = workdir / "team"
    team.mkdir()
    os.chown(team, 0, nogroup)
    team.chmod(0o770)
    (team / "bindpw").write_text("s3cret\n")
    (team / "bindpw").chmod(0o600)
    with pytest.raises(ConfigError, match=r"which group nogroup can write to, and that group"):
        verifier(DIRECTORY + BIND_USER + "LDAPBindPasswordFile team/bindpw\n")
    os.chown(team, 0, 0)  # root's group: no one else can change it
    assert verifier(DIRECTORY + BIND_USER + "LDAPBindPasswordFile team/bindpw\n")


def test_require_safe_keys_no_accepts_them_and_a_safe_file_is_accepted(workdir: Path) -> None:
    (workdir / "bindpw").write_text("s3cret\n")
    (workdir / "bindpw").chmod(0o644)
    loose = DIRECTORY + BIND_USER + "LDAPBindPasswordFile bindpw\nRequireSafeKeys no\n"
    assert verifier(loose).ldap_bind_password == Secret("s3cret")
    (workdir / "bindpw").chmod(0o400)
    assert verifier(DIRECTORY + BIND_USER + "LDAPBindPasswordFile bindpw\n").ldap_bind_password


def test_workers_auto_is_one_per_cpu_the_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5})
    assert parse("Mode v\nWorkers auto\n").workers == 3
    assert parse("Mode v\nWorkers 1\n").workers == 1


@pytest.mark.parametrize("value", ["0", "257", "many", "-1"])
def test_workers_out_of_range_names_the_line_and_a_fix(value: str) -> None:
    fix = r"test\.conf:2: Workers .* from 1 to 256; .* auto for one per CPU"
    with pytest.raises(ConfigError, match=fix):
        parse(f"Mode v\nWorkers {value}\n", "test.conf")


def test_arc_keywords_read_as_written() -> None:
    settings = verifier(
        "ARCSeal yes\nARCVerify yes\nARCSealHosts 192.0.2.0/24, lists.example.org\n"
        "ARCSealLogins Mailman, relay\nARCSealDomain Lists.Example.ORG\n"
        "ARCAuthResultsComments yes\n"
    )
    assert settings.arc_seal and settings.arc_verify and settings.arc_auth_results_comments
    assert settings.arc_seal_hosts.matches("192.0.2.7")
    assert settings.arc_seal_hosts.matches("198.51.100.1", "lists.example.org")
    assert not settings.arc_seal_hosts.matches("198.51.100.1", "mx.example.org")
    assert settings.arc_seal_logins == ("mailman", "relay")
    assert settings.arc_seal_domain == "lists.example.org"


@pytest.mark.parametrize("rule", ["envelope-sender", "recipient", "Recipient"])
def test_arc_seal_domain_rules(rule: str) -> None:
    assert verifier(f"ARCSealDomain {rule}\n").arc_seal_domain == rule.lower()


def test_arc_seal_domain_that_is_neither_rule_nor_domain_says_both_forms() -> None:
    message = verifier_error("ARCSealDomain envelope_sender!\n")
    assert "ARCSealDomain 'envelope_sender!' is neither a rule nor a domain name" in message
    assert "use envelope-sender, recipient or a domain such as lists.example.org" in message
