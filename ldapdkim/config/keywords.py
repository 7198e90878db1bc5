"""The keyword table: every configuration keyword once, with its field, converter, default and doc.

Each keyword has its converter (from :mod:`ldapdkim.config.values`, and
:mod:`ldapdkim.config.directorysource` for ``Directory``), its default (as
configuration text, converted like a value from the file) and a one-line doc;
:func:`keyword_reference` hands that table to the generated references
(``docs/reference/configuration.md`` and ``ldapdkim.conf(5)``).  OpenDKIM
keywords that ldapdkim deliberately lacks are listed in ``UNSUPPORTED`` with
what to do instead.  :mod:`ldapdkim.config.settings` reads a file with this table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ldapdkim.config import values
from ldapdkim.config.directorysource import directory
from ldapdkim.config.hostlist import HostList
from ldapdkim.model import Action, Outcome

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
class Keyword:
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
    opendkim: bool = False
    """opendkim.conf(5) has this keyword, with the same meaning
    (docs/reference/opendkim-differences.md lists where they differ on purpose)."""

    @property
    def default_text(self) -> str:
        if self.default is not None:
            return self.default
        return self.shown or "(none)"


def _on(outcome: Outcome, default: str, doc: str, *, opendkim: bool = False) -> Keyword:
    return Keyword(
        outcome.keyword, "on_actions", _action, default, doc, outcome=outcome, opendkim=opendkim
    )


KEYWORDS: tuple[Keyword, ...] = (
    # Operation
    Keyword("Mode", "mode", values.mode, "sv", "s to sign, v to verify, sv for both",
            opendkim=True),
    Keyword("Socket", "socket", values.socket, "inet:8891@127.0.0.1",
            "where the MTA connects: inet:PORT@HOST, inet6:PORT@HOST or local:/PATH",
            opendkim=True),
    Keyword("NoReplyOverTCP", "no_reply_over_tcp", values.boolean, "no",
            "on an inet: Socket, let the MTA send DATA, the header fields, end of header and "
            "the body without waiting for a reply to each, as on a Unix socket: only where the "
            "route to the MTA has quickack (ip route ... quickack 1), else each message waits "
            "about 40 ms for delayed ACKs (docs/mta.md)"),
    # The directory
    Keyword("Directory", "directory", directory, None,
            "LDAP URLs with the base DN as path (failover order), or ldif:PATH",
            shown="(none)"),
    Keyword("LDAPBindUser", "ldap_bind_user", values.text, None,
            "DN to bind as with a simple bind", shown="(anonymous)"),
    Keyword("LDAPBindPassword", "ldap_bind_password", values.password, None,
            "bind password; prefer LDAPBindPasswordFile, which keeps it out of this file"),
    Keyword("LDAPBindPasswordFile", "ldap_bind_password", values.password_file, None,
            "file whose first line is the bind password, read before dropping root"),
    Keyword("LDAPAdminBindUser", "ldap_admin_bind_user", values.text, None,
            "DN that 'ldapdkim rotate' binds as to write keys (simple bind); the milter "
            "never uses it", shown="(LDAPBindUser)"),
    Keyword("LDAPAdminBindPasswordFile", "ldap_admin_bind_password", values.password_file, None,
            "file whose first line is the password of LDAPAdminBindUser"),
    Keyword("LDAPAuthMechanism", "ldap_auth_mechanism", values.sasl_mechanism, None,
            "SIMPLE, EXTERNAL (TLS client certificate or ldapi://) or another SASL mechanism",
            shown="SIMPLE"),
    Keyword("LDAPAuthName", "ldap_auth_user", values.text, None,
            "SASL user to authenticate as (authcid), e.g. for DIGEST-MD5"),
    Keyword("LDAPAuthUser", "ldap_authz_id", values.text, None,
            "SASL identity to act as (authzid), when not the authenticated user"),
    Keyword("LDAPAuthRealm", "ldap_auth_realm", values.text, None, "SASL realm"),
    Keyword("LDAPUseTLS", "ldap_use_tls", values.boolean, "no",
            "issue StartTLS on ldap:// connections"),
    Keyword("LDAPTLSCACertFile", "ldap_tls_ca_cert_file", values.ca_file, None,
            "PEM file of the CAs trusted for the LDAP server certificate",
            shown="(libldap's ldap.conf)"),
    Keyword("LDAPTimeout", "ldap_timeout", values.positive_seconds, "5",
            "seconds before an LDAP connect or search is abandoned"),
    Keyword("LDAPCacheTTL", "ldap_cache_ttl", values.duration, "300",
            "how long a directory answer is reused (0 disables the cache)"),
    Keyword("LDAPNegativeCacheTTL", "ldap_negative_cache_ttl", values.duration, "60",
            "how long a 'no such domain' answer is reused"),
    Keyword("DirectoryMaxStale", "directory_max_stale", values.duration, "86400",
            "how long the last good answer is served while the directory is unreachable "
            "(0 disables)"),
    Keyword("DirectorySync", "directory_sync", values.directory_sync, "auto",
            "keep a replica of the directory current: auto (by RFC 4533 content sync, or "
            "by USN polling on Active Directory; else cached lookups), yes (replica only) "
            "or no (lookups only)"),
    Keyword("DirectoryPollInterval", "directory_poll_interval", values.positive_seconds, "10",
            "seconds between two polls for changes of a server without content sync "
            "(Active Directory: uSNChanged)"),
    # Signing
    Keyword("Canonicalization", "canonicalization", values.canonicalization, "simple/simple",
            "header/body canonicalization when signing, each simple or relaxed", opendkim=True),
    Keyword("SignHeaders", "sign_headers", values.sign_headers, None,
            "header fields to sign (From is always added)", shown="(RFC 6376 §5.4 set)",
            opendkim=True),
    Keyword("OversignHeaders", "oversign_headers", values.header_names, "from",
            "header fields signed once more than present, so none can be added", opendkim=True),
    Keyword("SignatureTTL", "signature_ttl", values.whole_seconds, "0",
            "signature lifetime for x= in seconds (0: no x= tag)", opendkim=True),
    Keyword("MinimumKeyBits", "minimum_key_bits", values.key_bits, "1024",
            "smallest RSA key accepted when verifying (512 at least)", opendkim=True),
    Keyword("SubDomains", "subdomains", values.boolean, "no",
            "also sign for subdomains of the signing domains", opendkim=True),
    Keyword("Domain", "domain", values.domains, None,
            "single-key mode: domains to sign (list, csl: or file:)", empty=(), opendkim=True),
    Keyword("Selector", "selector", values.selector, None, "single-key mode: selector of KeyFile",
            opendkim=True),
    Keyword("KeyFile", "key_file", values.key_file, None, "single-key mode: PEM private key file",
            opendkim=True),
    # Who is who
    Keyword("InternalHosts", "internal_hosts", values.host_list, "127.0.0.1, ::1",
            "clients whose mail is signed, not verified (replaces the default)", opendkim=True),
    Keyword("ExternalIgnoreList", "external_ignore_list", values.host_list, None,
            "outside clients allowed to send as signing domains without a log line",
            empty=HostList(), opendkim=True),
    Keyword("PeerList", "peer_list", values.host_list, None,
            "clients whose mail is passed without any DKIM processing", empty=HostList(),
            opendkim=True),
    Keyword("MacroList", "macro_list", values.macros, "{auth_authen}, {daemon_name}=ORIGINATING",
            "MTA macros that mark mail to sign: NAME or NAME=VALUE1|VALUE2", opendkim=True),
    # Who may sign as whom (docs/howto/sender-authorization.md, "Who may sign as whom")
    Keyword("SenderLoginBase", "sender_login_base", values.text, None,
            "where the entries that own addresses live (people, accounts); with "
            "SenderLoginFilter and SenderLoginAttribute, an authenticated login signs only "
            "for addresses it owns", shown="(off)"),
    Keyword("SenderLoginFilter", "sender_login_filter", values.login_filter, None,
            "filter for the entries owning the From address: %s the address, %u its local "
            "part, %d its domain, e.g. (|(mail=%s)(mailAlternateAddress=%s))"),
    Keyword("SenderLoginAttribute", "sender_login_attributes", values.attribute_names, None,
            "attributes of those entries that hold the owning logins, e.g. uid", empty=()),
    Keyword("SenderAlignment", "sender_alignment", values.alignment, "none",
            "MAIL FROM domain must match the From domain before signing: none, exact, or "
            "organizational (public suffix list); a domain entry may say otherwise"),
    Keyword("PublicSuffixList", "public_suffix_list", values.absolute_path,
            "/usr/share/publicsuffix/public_suffix_list.dat",
            "the public suffix list (Debian package publicsuffix), for organizational "
            "alignment"),
    # Verifying
    Keyword("AuthservID", "authserv_id", values.authserv_id, None,
            "authserv-id in Authentication-Results", shown="(host name)", opendkim=True),
    Keyword("Nameservers", "nameservers", values.nameservers, None,
            "DNS servers for key lookups: IP, IP:PORT or [IPv6]:PORT",
            shown="(system resolver)", empty=(), opendkim=True),
    Keyword("DNSTimeout", "dns_timeout", values.positive_seconds, "5",
            "seconds before a key lookup counts as a temporary DNS error (temperror)",
            opendkim=True),
    Keyword("AlwaysAddARHeader", "always_add_ar_header", values.boolean, "yes",
            "add Authentication-Results (dkim=none) to verified mail that has no signature; "
            "OpenDKIM's default is no", opendkim=True),
    Keyword("MaximumSignaturesToVerify", "maximum_signatures_to_verify", values.signature_count,
            "3", "how many signatures of one message are checked, author signatures first; "
            "those whose key is missing do not count", opendkim=True),
    # ARC (RFC 8617; docs/arc.md)
    Keyword("ARCVerify", "arc_verify", values.boolean, "no",
            "check the ARC chain of verified mail and add arc= to Authentication-Results"),
    Keyword("ARCSeal", "arc_seal", values.boolean, "no",
            "add an ARC set to the mail ARCSealHosts or ARCSealLogins send, and to mail for "
            "an address a domain entry lists in dkimSignArcAddress, when the sealing domain's "
            "entry names a key in dkimSignArcSelector"),
    Keyword("ARCSealHosts", "arc_seal_hosts", values.host_list, None,
            "clients (list servers, forwarders) whose mail is sealed", empty=HostList()),
    Keyword("ARCSealLogins", "arc_seal_logins", values.logins, None,
            "authenticated logins ({auth_authen}) whose mail is sealed", empty=()),
    Keyword("ARCSealDomain", "arc_seal_domain", values.arc_seal_domain, "envelope-sender",
            "the domain that seals: envelope-sender (the MAIL FROM domain, as lists and SRS "
            "forwarders rewrite it), recipient (the first recipient's domain that seals), or "
            "a fixed domain; it must be one of the directory's, never the author's otherwise"),
    Keyword("ARCAuthResultsComments", "arc_auth_results_comments", values.boolean, "no",
            "keep the comments (reasons) in ARC-Authentication-Results"),
    # Key rotation (ldapdkim rotate)
    Keyword("RotationOverlap", "rotation_overlap", values.duration, "2d",
            "how long a new key's DNS record must have been seen before rotate --advance "
            "activates the key"),
    Keyword("RotationRetireAfter", "rotation_retire_after", values.duration, "7d",
            "how long a retired key stays published before rotate --advance --prune "
            "deletes it"),
    # Process and logging
    Keyword("UserID", "user_id", values.user_id, None, "USER[:GROUP] to switch to after start",
            shown="(unchanged)", opendkim=True),
    Keyword("Workers", "workers", values.workers, "auto",
            "processes serving mail on the one Socket (each uses up to a core); auto: one per "
            "CPU the milter may run on; 1: a single process; above 1, a supervisor starts "
            "them, passes signals on and replaces one that dies"),
    Keyword("MetricsSocket", "metrics_socket", values.tcp_socket, None,
            "serve Prometheus metrics at /metrics and a health check at /healthz here: "
            "inet:PORT@HOST, e.g. inet:9469@127.0.0.1 (keep it off public addresses)",
            shown="(off)"),
    Keyword("PidFile", "pid_file", values.absolute_path, None, "file to write the process ID to",
            opendkim=True),
    Keyword("StateDirectory", "state_directory", values.absolute_path, "/var/lib/ldapdkim",
            "where the milter keeps its directory replica and status.json; the replica "
            "holds the private keys (files mode 0600; keep the directory 0700, owned by "
            "UserID)"),
    Keyword("UMask", "umask", values.umask, None, "octal file creation mask (socket, PidFile)",
            shown="(inherited)", opendkim=True),
    Keyword("Syslog", "syslog", values.boolean, "yes", "log to syslog (else to standard error)",
            opendkim=True),
    Keyword("SyslogFacility", "syslog_facility", values.facility, "mail", "syslog facility",
            opendkim=True),
    Keyword("SyslogSuccess", "syslog_success", values.boolean, "no",
            "also log each successful signature and verification", opendkim=True),
    Keyword("LogWhy", "log_why", values.boolean, "no",
            "log why each message was signed, verified or skipped", opendkim=True),
    Keyword("RequireSafeKeys", "require_safe_keys", values.boolean, "yes",
            "refuse a KeyFile or password file that group or others can read, or that "
            "another non-root user owns", opendkim=True),
    # Protecting keys (docs/security.md, "Protecting keys")
    Keyword("KeyEncryptionKey", "key_encryption_keys", values.key_encryption_key, None,
            "ID PATH: a key-encryption key (32 random bytes, or credential:NAME for a "
            "systemd credential) that opens and seals private keys sealed under ID; "
            "repeat the line for each KEK", empty=(), repeatable=True),
    Keyword("RequireSealedKeys", "require_sealed_keys", values.boolean, "no",
            "refuse to sign with a private key the directory holds in plaintext"),
    Keyword("PKCS11Module", "pkcs11_module", values.pkcs11_module, None,
            "the PKCS#11 module of the token that holds keys named by pkcs11: URIs",
            shown="(none)"),
    Keyword("PKCS11PinFile", "pkcs11_pin", values.pin_file, None,
            "file (or credential:NAME) whose first line is the token's user PIN"),
    Keyword("SoftwareHeader", "software_header", values.boolean, "no",
            "add a DKIM-Filter header field naming ldapdkim", opendkim=True),
    # Actions
    _on(Outcome.DEFAULT, "accept",
        "action for any outcome; when given, the default of every On-* not given", opendkim=True),
    _on(Outcome.BAD_SIGNATURE, "accept", "action when a signature fails to verify", opendkim=True),
    _on(Outcome.DNS_ERROR, "tempfail", "action when a key lookup fails temporarily", opendkim=True),
    _on(Outcome.INTERNAL_ERROR, "tempfail", "action when ldapdkim hits an internal error",
        opendkim=True),
    _on(Outcome.KEY_NOT_FOUND, "accept", "action when a signature's key is not in the DNS",
        opendkim=True),
    _on(Outcome.NO_SIGNATURE, "accept", "action for an unsigned message", opendkim=True),
    _on(Outcome.SIGNATURE_ERROR, "reject", "action when a message cannot be signed", opendkim=True),
    _on(Outcome.DIRECTORY_ERROR, "tempfail",
        "action when the directory cannot be read and no cached answer is fresh enough"),
    _on(Outcome.SENDER_MISMATCH, "accept",
        "action when the sender may not sign as the From address (accept: pass it unsigned)"),
)  # fmt: skip

BY_NAME = {kw.name.lower(): kw for kw in KEYWORDS}

OPENDKIM_KEYWORDS = frozenset(kw.name for kw in KEYWORDS if kw.opendkim)
"""The keywords of opendkim.conf(5) that ldapdkim takes, with OpenDKIM's meaning
(the table's ``opendkim`` column); KeyTable and SigningTable become directory
entries (``ldapdkim migrate``), and ``UNSUPPORTED`` lists the ones it refuses."""

_DAEMON_HINT = (
    "ldapdkim runs in the foreground; let the service manager start and restart it "
    "(systemd: Restart=on-failure) and remove the line"
)
_TABLE_HINT = "keys live in the directory; see 'ldapdkim migrate' and docs/howto/migration.md"

# OpenDKIM keywords that ldapdkim deliberately does not have, with what to do instead.
UNSUPPORTED = {
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


def keyword_reference() -> list[tuple[str, str, str]]:
    """Every keyword as (name, default as text, one-line doc), in documentation order."""
    return [(kw.name, kw.default_text, kw.doc) for kw in KEYWORDS]


def unsupported_keywords() -> list[tuple[str, str]]:
    """The OpenDKIM keywords ldapdkim refuses, each with what to do instead."""
    return list(UNSUPPORTED.values())
