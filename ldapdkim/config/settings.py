"""Read an opendkim.conf-syntax configuration file and validate it, whole, into :class:`Settings`.

The syntax is OpenDKIM's (opendkim.conf(5)):

- one ``Keyword value`` per line; the value is the rest of the line, stripped;
- ``#`` starts a comment that runs to the end of the line, wherever it stands
  (so a bind password containing ``#`` belongs in ``LDAPBindPasswordFile``);
- blank lines are ignored, keywords are case-insensitive, and a keyword given
  twice keeps its last value, silently, as in OpenDKIM;
- booleans are yes/no, true/false, on/off or 1/0; durations are seconds, or a
  number with the suffix s, m, h or d (``5m``);
- relative paths are taken from the current working directory, as OpenDKIM does,
  and stored as absolute paths, so a later change of directory does not move them.

Every keyword is declared once, in ``_KEYWORDS``, with its converter (from
:mod:`ldapdkim.config.values`, and :mod:`ldapdkim.config.directorysource` for
``Directory``), its default (as configuration text, converted like a value
from the file) and a one-line doc; :func:`keyword_reference` hands that table
to the generated references (``docs/reference/configuration.md`` and
``ldapdkim.conf(5)``).  OpenDKIM keywords that ldapdkim deliberately lacks are
listed in ``_UNSUPPORTED`` with what to do instead.

Every problem is a :class:`~ldapdkim.errors.ConfigError` reading
``FILE:LINE: what; how to fix``.  No message and no ``repr`` shows the bind
password.
"""

from __future__ import annotations

import difflib
import os
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from ldapdkim.config import values
from ldapdkim.config.datasets import keyword_lines
from ldapdkim.config.directorysource import DirectorySource, directory
from ldapdkim.config.hostlist import HostList
from ldapdkim.config.ldap import ADMIN_BIND_KEYWORDS, LdapSettings
from ldapdkim.config.secret import Secret, unsafe
from ldapdkim.errors import ConfigError
from ldapdkim.model import Action, Alignment, Canonicalization, DirectorySync, Outcome
from ldapdkim.sealing import KeyEncryptionKey

# --------------------------------------------------------------------------
# The On-* actions


def _action(ctx: values.Context, value: str) -> Action:
    try:
        return Action.parse(value)
    except ValueError:
        ctx.fail(
            f"{ctx.keyword} {value!r} is not an action",
            "use accept (a), discard (d), quarantine (q), reject (r) or tempfail (t)",
        )


# --------------------------------------------------------------------------
# The keyword table: the single source of truth for names, types, defaults, docs.


@dataclass(frozen=True)
class _Keyword:
    name: str
    field: str
    convert: Callable[[values.Context, str], Any]
    default: str | None
    """Default as configuration text, converted like a value from the file."""
    doc: str
    shown: str | None = None
    """How the default reads in the reference, when ``default`` is None."""
    empty: Any = None
    """The field value when ``default`` is None."""

    outcome: Outcome | None = None
    """The outcome an On-* keyword gives its action to; None for other keywords."""
    repeatable: bool = False
    """Each line adds a value (the field is a tuple of them) instead of replacing it."""

    @property
    def default_text(self) -> str:
        if self.default is not None:
            return self.default
        return self.shown or "(none)"


def _on(outcome: Outcome, default: str, doc: str) -> _Keyword:
    return _Keyword(outcome.keyword, "on_actions", _action, default, doc, outcome=outcome)


_KEYWORDS: tuple[_Keyword, ...] = (
    # Operation
    _Keyword("Mode", "mode", values.mode, "sv", "s to sign, v to verify, sv for both"),
    _Keyword("Socket", "socket", values.socket, "inet:8891@127.0.0.1",
             "where the MTA connects: inet:PORT@HOST, inet6:PORT@HOST or local:/PATH"),
    # The directory
    _Keyword("Directory", "directory", directory, None,
             "LDAP URLs with the base DN as path (failover order), or ldif:PATH",
             shown="(none)"),
    _Keyword("LDAPBindUser", "ldap_bind_user", values.text, None,
             "DN to bind as with a simple bind", shown="(anonymous)"),
    _Keyword("LDAPBindPassword", "ldap_bind_password", values.password, None,
             "bind password; prefer LDAPBindPasswordFile, which keeps it out of this file"),
    _Keyword("LDAPBindPasswordFile", "ldap_bind_password", values.password_file, None,
             "file whose first line is the bind password, read before dropping root"),
    _Keyword("LDAPAdminBindUser", "ldap_admin_bind_user", values.text, None,
             "DN that 'ldapdkim rotate' binds as to write keys (simple bind); the milter "
             "never uses it", shown="(LDAPBindUser)"),
    _Keyword("LDAPAdminBindPasswordFile", "ldap_admin_bind_password", values.password_file, None,
             "file whose first line is the password of LDAPAdminBindUser"),
    _Keyword("LDAPAuthMechanism", "ldap_auth_mechanism", values.sasl_mechanism, None,
             "SIMPLE, EXTERNAL (TLS client certificate or ldapi://) or another SASL mechanism",
             shown="SIMPLE"),
    _Keyword("LDAPAuthName", "ldap_auth_user", values.text, None,
             "SASL user to authenticate as (authcid), e.g. for DIGEST-MD5"),
    _Keyword("LDAPAuthUser", "ldap_authz_id", values.text, None,
             "SASL identity to act as (authzid), when not the authenticated user"),
    _Keyword("LDAPAuthRealm", "ldap_auth_realm", values.text, None, "SASL realm"),
    _Keyword("LDAPUseTLS", "ldap_use_tls", values.boolean, "no",
             "issue StartTLS on ldap:// connections"),
    _Keyword("LDAPTLSCACertFile", "ldap_tls_ca_cert_file", values.ca_file, None,
             "PEM file of the CAs trusted for the LDAP server certificate",
             shown="(libldap's ldap.conf)"),
    _Keyword("LDAPTimeout", "ldap_timeout", values.positive_seconds, "5",
             "seconds before an LDAP connect or search is abandoned"),
    _Keyword("LDAPCacheTTL", "ldap_cache_ttl", values.duration, "300",
             "how long a directory answer is reused (0 disables the cache)"),
    _Keyword("LDAPNegativeCacheTTL", "ldap_negative_cache_ttl", values.duration, "60",
             "how long a 'no such domain' answer is reused"),
    _Keyword("DirectoryMaxStale", "directory_max_stale", values.duration, "86400",
             "how long the last good answer is served while the directory is unreachable "
             "(0 disables)"),
    _Keyword("DirectorySync", "directory_sync", values.directory_sync, "auto",
             "keep a replica of the directory current: auto (by RFC 4533 content sync, or "
             "by USN polling on Active Directory; else cached lookups), yes (replica only) "
             "or no (lookups only)"),
    _Keyword("DirectoryPollInterval", "directory_poll_interval", values.positive_seconds, "10",
             "seconds between two polls for changes of a server without content sync "
             "(Active Directory: uSNChanged)"),
    # Signing
    _Keyword("Canonicalization", "canonicalization", values.canonicalization, "simple/simple",
             "header/body canonicalization when signing, each simple or relaxed"),
    _Keyword("SignHeaders", "sign_headers", values.sign_headers, None,
             "header fields to sign (From is always added)", shown="(RFC 6376 §5.4 set)"),
    _Keyword("OversignHeaders", "oversign_headers", values.header_names, "from",
             "header fields signed once more than present, so none can be added"),
    _Keyword("SignatureTTL", "signature_ttl", values.whole_seconds, "0",
             "signature lifetime for x= in seconds (0: no x= tag)"),
    _Keyword("MinimumKeyBits", "minimum_key_bits", values.key_bits, "1024",
             "smallest RSA key accepted when verifying (512 at least)"),
    _Keyword("SubDomains", "subdomains", values.boolean, "no",
             "also sign for subdomains of the signing domains"),
    _Keyword("Domain", "domain", values.domains, None,
             "single-key mode: domains to sign (list, csl: or file:)", empty=()),
    _Keyword("Selector", "selector", values.selector, None, "single-key mode: selector of KeyFile"),
    _Keyword("KeyFile", "key_file", values.key_file, None, "single-key mode: PEM private key file"),
    # Who is who
    _Keyword("InternalHosts", "internal_hosts", values.host_list, "127.0.0.1, ::1",
             "clients whose mail is signed, not verified (replaces the default)"),
    _Keyword("ExternalIgnoreList", "external_ignore_list", values.host_list, None,
             "outside clients allowed to send as signing domains without a log line",
             empty=HostList()),
    _Keyword("PeerList", "peer_list", values.host_list, None,
             "clients whose mail is passed without any DKIM processing", empty=HostList()),
    _Keyword("MacroList", "macro_list", values.macros, "{auth_authen}, {daemon_name}=ORIGINATING",
             "MTA macros that mark mail to sign: NAME or NAME=VALUE1|VALUE2"),
    # Who may sign as whom (docs/howto/sender-authorization.md, "Who may sign as whom")
    _Keyword("SenderLoginBase", "sender_login_base", values.text, None,
             "where the entries that own addresses live (people, accounts); with "
             "SenderLoginFilter and SenderLoginAttribute, an authenticated login signs only "
             "for addresses it owns", shown="(off)"),
    _Keyword("SenderLoginFilter", "sender_login_filter", values.login_filter, None,
             "filter for the entries owning the From address: %s the address, %u its local "
             "part, %d its domain, e.g. (|(mail=%s)(mailAlternateAddress=%s))"),
    _Keyword("SenderLoginAttribute", "sender_login_attributes", values.attribute_names, None,
             "attributes of those entries that hold the owning logins, e.g. uid", empty=()),
    _Keyword("SenderAlignment", "sender_alignment", values.alignment, "none",
             "MAIL FROM domain must match the From domain before signing: none, exact, or "
             "organizational (public suffix list); a domain entry may say otherwise"),
    _Keyword("PublicSuffixList", "public_suffix_list", values.absolute_path,
             "/usr/share/publicsuffix/public_suffix_list.dat",
             "the public suffix list (Debian package publicsuffix), for organizational "
             "alignment"),
    # Verifying
    _Keyword("AuthservID", "authserv_id", values.authserv_id, None,
             "authserv-id in Authentication-Results", shown="(host name)"),
    _Keyword("Nameservers", "nameservers", values.nameservers, None,
             "DNS servers for key lookups: IP, IP:PORT or [IPv6]:PORT",
             shown="(system resolver)", empty=()),
    _Keyword("DNSTimeout", "dns_timeout", values.positive_seconds, "5",
             "seconds before a key lookup counts as a temporary DNS error (temperror)"),
    _Keyword("AlwaysAddARHeader", "always_add_ar_header", values.boolean, "yes",
             "add Authentication-Results (dkim=none) to verified mail that has no signature; "
             "OpenDKIM's default is no"),
    _Keyword("MaximumSignaturesToVerify", "maximum_signatures_to_verify", values.signature_count,
             "3", "how many signatures of one message are checked, author signatures first; "
             "those whose key is missing do not count"),
    # Key rotation (ldapdkim rotate)
    _Keyword("RotationOverlap", "rotation_overlap", values.duration, "2d",
             "how long a new key's DNS record must have been seen before rotate --advance "
             "activates the key"),
    _Keyword("RotationRetireAfter", "rotation_retire_after", values.duration, "7d",
             "how long a retired key stays published before rotate --advance --prune "
             "deletes it"),
    # Process and logging
    _Keyword("UserID", "user_id", values.user_id, None, "USER[:GROUP] to switch to after start",
             shown="(unchanged)"),
    _Keyword("Workers", "workers", values.workers, "auto",
             "processes serving mail on the one Socket (each uses up to a core); auto: one per "
             "CPU the milter may run on; 1: a single process; above 1, a supervisor starts "
             "them, passes signals on and replaces one that dies"),
    _Keyword("MetricsSocket", "metrics_socket", values.tcp_socket, None,
             "serve Prometheus metrics at /metrics and a health check at /healthz here: "
             "inet:PORT@HOST, e.g. inet:9469@127.0.0.1 (keep it off public addresses)",
             shown="(off)"),
    _Keyword("PidFile", "pid_file", values.absolute_path, None, "file to write the process ID to"),
    _Keyword("StateDirectory", "state_directory", values.absolute_path, "/var/lib/ldapdkim",
             "where the milter keeps its directory replica and status.json; the replica "
             "holds the private keys (files mode 0600; keep the directory 0700, owned by "
             "UserID)"),
    _Keyword("UMask", "umask", values.umask, None, "octal file creation mask (socket, PidFile)",
             shown="(inherited)"),
    _Keyword("Syslog", "syslog", values.boolean, "yes", "log to syslog (else to standard error)"),
    _Keyword("SyslogFacility", "syslog_facility", values.facility, "mail", "syslog facility"),
    _Keyword("SyslogSuccess", "syslog_success", values.boolean, "no",
             "also log each successful signature and verification"),
    _Keyword("LogWhy", "log_why", values.boolean, "no",
             "log why each message was signed, verified or skipped"),
    _Keyword("RequireSafeKeys", "require_safe_keys", values.boolean, "yes",
             "refuse a KeyFile or password file that group or others can read, or that "
             "another non-root user owns"),
    # Protecting keys (docs/security.md, "Protecting keys")
    _Keyword("KeyEncryptionKey", "key_encryption_keys", values.key_encryption_key, None,
             "ID PATH: a key-encryption key (32 random bytes, or credential:NAME for a "
             "systemd credential) that opens and seals private keys sealed under ID; "
             "repeat the line for each KEK", empty=(), repeatable=True),
    _Keyword("RequireSealedKeys", "require_sealed_keys", values.boolean, "no",
             "refuse to sign with a private key the directory holds in plaintext"),
    _Keyword("PKCS11Module", "pkcs11_module", values.pkcs11_module, None,
             "the PKCS#11 module of the token that holds keys named by pkcs11: URIs",
             shown="(none)"),
    _Keyword("PKCS11PinFile", "pkcs11_pin", values.pin_file, None,
             "file (or credential:NAME) whose first line is the token's user PIN"),
    _Keyword("SoftwareHeader", "software_header", values.boolean, "no",
             "add a DKIM-Filter header field naming ldapdkim"),
    # Actions
    _on(Outcome.DEFAULT, "accept",
        "action for any outcome; when given, the default of every On-* not given"),
    _on(Outcome.BAD_SIGNATURE, "accept", "action when a signature fails to verify"),
    _on(Outcome.DNS_ERROR, "tempfail", "action when a key lookup fails temporarily"),
    _on(Outcome.INTERNAL_ERROR, "tempfail", "action when ldapdkim hits an internal error"),
    _on(Outcome.KEY_NOT_FOUND, "accept", "action when a signature's key is not in the DNS"),
    _on(Outcome.NO_SIGNATURE, "accept", "action for an unsigned message"),
    _on(Outcome.SIGNATURE_ERROR, "reject", "action when a message cannot be signed"),
    _on(Outcome.DIRECTORY_ERROR, "tempfail",
        "action when the directory cannot be read and no cached answer is fresh enough"),
    _on(Outcome.SENDER_MISMATCH, "accept",
        "action when the sender may not sign as the From address (accept: pass it unsigned)"),
)  # fmt: skip

_BY_NAME = {kw.name.lower(): kw for kw in _KEYWORDS}

OPENDKIM_KEYWORDS = frozenset(
    {
        "Mode", "Socket", "Domain", "Selector", "KeyFile", "Canonicalization",
        "SignHeaders", "OversignHeaders", "SignatureTTL", "MinimumKeyBits", "SubDomains",
        "InternalHosts", "ExternalIgnoreList", "PeerList", "MacroList", "AuthservID",
        "Nameservers", "DNSTimeout", "MaximumSignaturesToVerify", "AlwaysAddARHeader",
        "UserID", "PidFile", "UMask", "Syslog", "SyslogFacility", "SyslogSuccess", "LogWhy",
        "RequireSafeKeys", "SoftwareHeader", "On-Default", "On-BadSignature", "On-DNSError",
        "On-InternalError", "On-KeyNotFound", "On-NoSignature", "On-SignatureError",
    }
)  # fmt: skip
"""The keywords of opendkim.conf(5) that ldapdkim takes, with OpenDKIM's meaning
(docs/reference/opendkim-differences.md lists where they differ on purpose);
KeyTable and SigningTable become directory entries (``ldapdkim migrate``)."""

_DAEMON_HINT = (
    "ldapdkim runs in the foreground; let the service manager start and restart it "
    "(systemd: Restart=on-failure) and remove the line"
)
_TABLE_HINT = "keys live in the directory; see 'ldapdkim migrate' and docs/howto/migration.md"

# OpenDKIM keywords that ldapdkim deliberately does not have, with what to do instead.
_UNSUPPORTED = {
    kw.lower(): (kw, hint)
    for kw, hint in (
        ("KeyTable", _TABLE_HINT),
        ("SigningTable", _TABLE_HINT),
        ("Include", "ldapdkim reads one file; copy the settings into it"),
        ("Background", _DAEMON_HINT),
        ("AutoRestart", _DAEMON_HINT),
        ("AutoRestartCount", _DAEMON_HINT),
        ("AutoRestartRate", _DAEMON_HINT),
        ("BaseDirectory", "write absolute paths, or start ldapdkim in that directory "
                          "(systemd: WorkingDirectory=)"),
        ("TemporaryDirectory", "ldapdkim keeps messages in memory; remove the line"),
        ("ResolverConfiguration", "ldapdkim uses the system resolver or Nameservers; "
                                  "remove the line"),
        ("TrustAnchorFile", "validate DNSSEC in a local resolver and point Nameservers at it; "
                            "remove the line"),
    )
}  # fmt: skip


def _default(keyword: _Keyword) -> Any:
    """The default value of a keyword's field, converted from the table's text."""
    if keyword.default is None:
        return keyword.empty
    return keyword.convert(values.Context("<default>", 0, keyword.name), keyword.default)


# Settings field -> default; where two keywords share a field, the first one's default.
_DEFAULTS: dict[str, Any] = {}
for _keyword in _KEYWORDS:
    if _keyword.outcome is None:
        _DEFAULTS.setdefault(_keyword.field, _default(_keyword))


def _default_actions() -> Mapping[Outcome, Action]:
    return types.MappingProxyType(
        {
            kw.outcome: _action(values.Context("<default>", 0, kw.name), str(kw.default))
            for kw in _KEYWORDS
            if kw.outcome is not None
        }
    )


def keyword_reference() -> list[tuple[str, str, str]]:
    """Every keyword as (name, default as text, one-line doc), in documentation order."""
    return [(kw.name, kw.default_text, kw.doc) for kw in _KEYWORDS]


def unsupported_keywords() -> list[tuple[str, str]]:
    """The OpenDKIM keywords ldapdkim refuses, each with what to do instead."""
    return list(_UNSUPPORTED.values())


@dataclass(frozen=True)
class Settings:
    """The whole validated configuration.  Build it with :func:`load` or :func:`parse`.

    Fields hold the defaults of the keyword table; ``Settings()`` itself skips
    the cross-checks that :func:`parse` makes.
    """

    source: str = "<defaults>"
    mode: str = _DEFAULTS["mode"]
    socket: str = _DEFAULTS["socket"]
    directory: DirectorySource | None = _DEFAULTS["directory"]
    ldap_bind_user: str | None = _DEFAULTS["ldap_bind_user"]
    ldap_bind_password: Secret | None = _DEFAULTS["ldap_bind_password"]
    ldap_admin_bind_user: str | None = _DEFAULTS["ldap_admin_bind_user"]
    ldap_admin_bind_password: Secret | None = _DEFAULTS["ldap_admin_bind_password"]
    ldap_auth_mechanism: str | None = _DEFAULTS["ldap_auth_mechanism"]
    ldap_auth_user: str | None = _DEFAULTS["ldap_auth_user"]
    ldap_authz_id: str | None = _DEFAULTS["ldap_authz_id"]
    ldap_auth_realm: str | None = _DEFAULTS["ldap_auth_realm"]
    ldap_use_tls: bool = _DEFAULTS["ldap_use_tls"]
    ldap_tls_ca_cert_file: Path | None = _DEFAULTS["ldap_tls_ca_cert_file"]
    ldap_timeout: float = _DEFAULTS["ldap_timeout"]
    ldap_cache_ttl: float = _DEFAULTS["ldap_cache_ttl"]
    ldap_negative_cache_ttl: float = _DEFAULTS["ldap_negative_cache_ttl"]
    directory_max_stale: float = _DEFAULTS["directory_max_stale"]
    directory_sync: DirectorySync = _DEFAULTS["directory_sync"]
    directory_poll_interval: float = _DEFAULTS["directory_poll_interval"]
    canonicalization: Canonicalization = _DEFAULTS["canonicalization"]
    sign_headers: tuple[str, ...] | None = _DEFAULTS["sign_headers"]
    oversign_headers: tuple[str, ...] = _DEFAULTS["oversign_headers"]
    signature_ttl: int = _DEFAULTS["signature_ttl"]
    minimum_key_bits: int = _DEFAULTS["minimum_key_bits"]
    subdomains: bool = _DEFAULTS["subdomains"]
    domain: tuple[str, ...] = _DEFAULTS["domain"]
    selector: str | None = _DEFAULTS["selector"]
    key_file: Path | None = _DEFAULTS["key_file"]
    internal_hosts: HostList = _DEFAULTS["internal_hosts"]
    external_ignore_list: HostList = _DEFAULTS["external_ignore_list"]
    peer_list: HostList = _DEFAULTS["peer_list"]
    macro_list: tuple[tuple[str, tuple[str, ...]], ...] = _DEFAULTS["macro_list"]
    authserv_id: str | None = _DEFAULTS["authserv_id"]
    nameservers: tuple[tuple[str, int], ...] = _DEFAULTS["nameservers"]
    dns_timeout: float = _DEFAULTS["dns_timeout"]
    maximum_signatures_to_verify: int = _DEFAULTS["maximum_signatures_to_verify"]
    rotation_overlap: float = _DEFAULTS["rotation_overlap"]
    rotation_retire_after: float = _DEFAULTS["rotation_retire_after"]
    user_id: str | None = _DEFAULTS["user_id"]
    sender_login_base: str | None = _DEFAULTS["sender_login_base"]
    sender_login_filter: str | None = _DEFAULTS["sender_login_filter"]
    sender_login_attributes: tuple[str, ...] = _DEFAULTS["sender_login_attributes"]
    sender_alignment: Alignment = _DEFAULTS["sender_alignment"]
    public_suffix_list: Path = _DEFAULTS["public_suffix_list"]
    workers: int = _DEFAULTS["workers"]
    metrics_socket: tuple[str, int] | None = _DEFAULTS["metrics_socket"]
    """(host, port) of the metrics and health endpoint; None: off."""
    pid_file: Path | None = _DEFAULTS["pid_file"]
    state_directory: Path = _DEFAULTS["state_directory"]
    umask: int | None = _DEFAULTS["umask"]
    syslog: bool = _DEFAULTS["syslog"]
    syslog_facility: str = _DEFAULTS["syslog_facility"]
    syslog_success: bool = _DEFAULTS["syslog_success"]
    log_why: bool = _DEFAULTS["log_why"]
    require_safe_keys: bool = _DEFAULTS["require_safe_keys"]
    key_encryption_keys: tuple[KeyEncryptionKey, ...] = _DEFAULTS["key_encryption_keys"]
    require_sealed_keys: bool = _DEFAULTS["require_sealed_keys"]
    pkcs11_module: Path | None = _DEFAULTS["pkcs11_module"]
    pkcs11_pin: Secret | None = _DEFAULTS["pkcs11_pin"]
    software_header: bool = _DEFAULTS["software_header"]
    always_add_ar_header: bool = _DEFAULTS["always_add_ar_header"]
    on_actions: Mapping[Outcome, Action] = field(default_factory=_default_actions, hash=False)

    @property
    def ldap(self) -> LdapSettings | None:
        """How the milter connects to the directory; None unless ``Directory`` is LDAP."""
        source = self.directory
        if source is None or source.kind != "ldap":
            return None
        return LdapSettings(
            uris=source.uris,
            base_dn=source.base_dn,
            bind_dn=self.ldap_bind_user,
            password=self.ldap_bind_password,
            sasl_mechanism=self.ldap_auth_mechanism,
            sasl_authcid=self.ldap_auth_user,
            sasl_authzid=self.ldap_authz_id,
            sasl_realm=self.ldap_auth_realm,
            start_tls=self.ldap_use_tls,
            ca_cert_file=self.ldap_tls_ca_cert_file,
            timeout=self.ldap_timeout,
        )

    @property
    def ldap_admin(self) -> LdapSettings | None:
        """How ``ldapdkim rotate`` connects to write: as LDAPAdminBindUser when it is set."""
        ldap = self.ldap
        if ldap is None or self.ldap_admin_bind_user is None:
            return ldap
        return ldap.binding_as(
            self.ldap_admin_bind_user, self.ldap_admin_bind_password, ADMIN_BIND_KEYWORDS
        )

    @property
    def socket_is_local(self) -> bool:
        """``Socket`` is a Unix socket (``local:`` or ``unix:``), which has no Nagle delay."""
        return self.socket.startswith(("local:", "unix:"))

    @property
    def signs(self) -> bool:
        return "s" in self.mode

    @property
    def verifies(self) -> bool:
        return "v" in self.mode

    def action_for(self, outcome: Outcome) -> Action:
        """The action the ``On-*`` keywords give ``outcome``."""
        return self.on_actions[outcome]


# --------------------------------------------------------------------------
# Reading


def load(path: str | os.PathLike[str]) -> Settings:
    """Read and validate the configuration file at ``path``.

    Raises:
        ConfigError: the file cannot be read, or any problem :func:`parse` finds.
    """
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ConfigError(
            f"{source}: configuration file not found; check the path, or start from "
            "the commented sample conf/ldapdkim.conf"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{source}: is a directory; name the configuration file") from None
    except PermissionError:
        raise ConfigError(
            f"{source}: configuration file cannot be read (permission denied); "
            "run as a user who may read it, or fix its permissions"
        ) from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{source}: not UTF-8 text ({err.reason}); save it as UTF-8") from err
    except OSError as err:
        raise ConfigError(f"{source}: cannot be read ({err.strerror}); check the path") from err
    return parse(text, source)


def parse(text: str, source: str = "<string>") -> Settings:
    """Validate configuration ``text``; ``source`` names it in error messages.

    Relative paths in values are taken from the current working directory.

    Raises:
        ConfigError: ``source:LINE: what; fix`` for the first problem found.
    """
    given: dict[str, tuple[_Keyword, str, int]] = {}
    repeated: dict[str, list[tuple[str, int]]] = {}
    for number, name, value in keyword_lines(text):
        keyword = _BY_NAME.get(name.lower())
        if keyword is None:
            _reject_keyword(source, number, name)
        if not value:
            raise ConfigError(
                f"{source}:{number}: {keyword.name} needs a value; write "
                f"'{keyword.name} VALUE' or remove the line (default: {keyword.default_text})"
            )
        given[keyword.name] = (keyword, value, number)
        if keyword.repeatable:
            repeated.setdefault(keyword.name, []).append((value, number))

    _check_one_password(source, given)
    require_safe = _DEFAULTS["require_safe_keys"]
    if "RequireSafeKeys" in given:
        safe_keyword, safe_value, safe_line = given["RequireSafeKeys"]
        require_safe = values.boolean(values.Context(source, safe_line, safe_keyword.name),
                                      safe_value)  # fmt: skip
    fields: dict[str, Any] = {}
    actions: dict[Outcome, Action] = {}
    for keyword, value, number in sorted(given.values(), key=lambda item: item[2]):
        if keyword.repeatable:
            fields[keyword.field] = _convert_repeated(
                source, keyword, repeated[keyword.name], require_safe
            )
            continue
        context = values.Context(source, number, keyword.name, require_safe)
        converted = keyword.convert(context, value)
        if keyword.outcome is not None:
            actions[keyword.outcome] = converted
        else:
            fields[keyword.field] = converted

    # OpenDKIM applies On-Default first, then the specific On-* keywords.
    final = dict(_default_actions())
    for outcome in final:
        if outcome in actions:
            final[outcome] = actions[outcome]
        elif Outcome.DEFAULT in actions:
            final[outcome] = actions[Outcome.DEFAULT]
    settings = Settings(source=source, on_actions=types.MappingProxyType(final), **fields)
    _cross_check(settings, {name: item[2] for name, item in given.items()})
    if settings.require_safe_keys:
        _check_secret_files(source, given)
    return settings


def _convert_repeated(
    source: str, keyword: _Keyword, lines: list[tuple[str, int]], require_safe: bool
) -> tuple[Any, ...]:
    """The values of a repeatable keyword, in file order; one id may not come twice."""
    converted = []
    seen: dict[str, int] = {}
    for value, number in lines:
        item = keyword.convert(values.Context(source, number, keyword.name, require_safe), value)
        name = getattr(item, "kek_id", None)
        if name is not None:
            if name in seen:
                raise ConfigError(
                    f"{source}:{number}: {keyword.name} {name} is given twice (also line "
                    f"{seen[name]}); give each KEK its own id"
                )
            seen[name] = number
        converted.append(item)
    return tuple(converted)


def _reject_keyword(source: str, number: int, name: str) -> NoReturn:
    lower = name.lower()
    if lower in _UNSUPPORTED:
        spelled, hint = _UNSUPPORTED[lower]
        raise ConfigError(
            f"{source}:{number}: OpenDKIM keyword {spelled!r} is not supported by ldapdkim; {hint}"
        )
    stem = re.split(r"[=:]", name, maxsplit=1)[0]
    if stem != name and stem.lower() in _BY_NAME:
        spelled = _BY_NAME[stem.lower()].name
        raise ConfigError(
            f"{source}:{number}: unknown keyword {name!r}; write '{spelled} VALUE' "
            "(keyword, blank, value)"
        )
    spellings = {kw.name.lower(): kw.name for kw in _KEYWORDS}
    spellings.update({key: spelled for key, (spelled, _) in _UNSUPPORTED.items()})
    close = difflib.get_close_matches(lower, list(spellings), n=1)
    if close:
        raise ConfigError(
            f"{source}:{number}: unknown keyword {name!r}; did you mean {spellings[close[0]]!r}?"
        )
    raise ConfigError(
        f"{source}:{number}: unknown keyword {name!r}; remove the line, or check the spelling "
        "against the keyword list in ldapdkim.conf(5)"
    )


def _check_one_password(source: str, given: Mapping[str, tuple[_Keyword, str, int]]) -> None:
    """LDAPBindPassword and LDAPBindPasswordFile set one field: refuse both."""
    if "LDAPBindPassword" in given and "LDAPBindPasswordFile" in given:
        (first, first_line), (second, second_line) = sorted(
            ((name, given[name][2]) for name in ("LDAPBindPassword", "LDAPBindPasswordFile")),
            key=lambda item: item[1],
        )
        raise ConfigError(
            f"{source}:{second_line}: {second} and {first} (line {first_line}) are both given; "
            "keep one (LDAPBindPasswordFile keeps the password out of the configuration file)"
        )


_SECRET_FILES = ("KeyFile", "LDAPBindPasswordFile", "LDAPAdminBindPasswordFile")


def _check_secret_files(source: str, given: Mapping[str, tuple[_Keyword, str, int]]) -> None:
    """RequireSafeKeys: every file holding a key or a password is the owner's alone."""
    for name in _SECRET_FILES:
        if name not in given:
            continue
        _, value, line = given[name]
        path = values.absolute_path(values.Context(source, line, name), value)
        problem = unsafe(path)
        if problem is not None:
            raise ConfigError(
                f"{source}:{line}: {name} {path} {problem}, or set RequireSafeKeys no"
            )


_SENDER_LOGIN = ("SenderLoginBase", "SenderLoginFilter", "SenderLoginAttribute")


def _check_sender_logins(
    settings: Settings, lines: Mapping[str, int], at: Callable[[str], str]
) -> None:
    """The three SenderLogin keywords come together, and need an LDAP Directory."""
    given = [name for name in _SENDER_LOGIN if name in lines]
    if not given:
        return
    missing = [name for name in _SENDER_LOGIN if name not in lines]
    if missing:
        raise ConfigError(
            f"{at(given[0])}: {' and '.join(given)} given without {' and '.join(missing)}; "
            "sender authorization by login needs all three (docs/howto/sender-authorization.md)"
        )
    if settings.directory is None or settings.directory.kind != "ldap":
        raise ConfigError(
            f"{at('SenderLoginBase')}: SenderLoginBase needs an LDAP Directory to search; "
            "set Directory to ldap://... or remove the SenderLogin lines"
        )
    if settings.action_for(Outcome.SENDER_MISMATCH) not in (
        Action.ACCEPT,
        Action.REJECT,
        Action.TEMPFAIL,
    ):
        raise ConfigError(
            f"{at('On-SenderMismatch')}: On-SenderMismatch must be accept (pass unsigned), "
            "reject or tempfail"
        )


def _cross_check(settings: Settings, lines: Mapping[str, int]) -> None:
    """Checks that involve more than one keyword; ``lines`` maps each given keyword to its line."""
    source = settings.source

    def at(name: str) -> str:
        return f"{source}:{lines[name]}" if name in lines else source

    single = [name for name in ("Domain", "Selector", "KeyFile") if name in lines]
    if single and "Directory" in lines:
        first = min(single, key=lambda name: lines[name])
        raise ConfigError(
            f"{at(first)}: {first} cannot be combined with Directory (line {lines['Directory']}); "
            "use one or the other: Directory for keys in LDAP or an LDIF file, or "
            "Domain, Selector and KeyFile for a single key file"
        )
    if single and len(single) < 3:
        missing = [name for name in ("Domain", "Selector", "KeyFile") if name not in lines]
        first = min(single, key=lambda name: lines[name])
        raise ConfigError(
            f"{at(first)}: {' and '.join(single)} given without {' and '.join(missing)}; "
            "single-key signing needs Domain, Selector and KeyFile together, "
            "or use Directory instead"
        )
    if settings.signs and settings.directory is None and not single:
        said = f"Mode {settings.mode}" if "Mode" in lines else f"Mode is {settings.mode} by default"
        raise ConfigError(
            f"{at('Mode')}: {said}, which signs, but there are no keys "
            "(neither Directory nor Domain, Selector and KeyFile); add Directory "
            "(ldap://HOST/BASE-DN or ldif:PATH) or Domain, Selector and KeyFile, "
            "or set 'Mode v' to verify only"
        )
    if (settings.ldap_admin_bind_user is None) != (settings.ldap_admin_bind_password is None):
        names = ["LDAPAdminBindUser", "LDAPAdminBindPasswordFile"]
        given, absent = names if settings.ldap_admin_bind_user is not None else names[::-1]
        raise ConfigError(
            f"{at(given)}: {given} is given without {absent}; 'ldapdkim rotate' binds with "
            "both (a simple bind), so add the other, or remove both to write as LDAPBindUser"
        )
    _check_sender_logins(settings, lines, at)
    if settings.directory is not None and settings.directory.kind == "ldif":
        return  # the LDAP bind keywords do not apply to a file
    if settings.ldap_auth_mechanism is None:
        password = "LDAPBindPasswordFile" if "LDAPBindPasswordFile" in lines else "LDAPBindPassword"
        if settings.ldap_bind_user is not None and settings.ldap_bind_password is None:
            raise ConfigError(
                f"{at('LDAPBindUser')}: LDAPBindUser is given without a password; add "
                "LDAPBindPasswordFile (or LDAPBindPassword), or set LDAPAuthMechanism EXTERNAL "
                "to bind with a TLS client certificate or over ldapi://"
            )
        if settings.ldap_bind_password is not None and settings.ldap_bind_user is None:
            raise ConfigError(
                f"{at(password)}: {password} is given without LDAPBindUser; add LDAPBindUser "
                "with the DN to bind as, or remove the password to bind anonymously"
            )
