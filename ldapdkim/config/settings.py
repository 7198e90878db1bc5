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

Every keyword is declared once, in the keyword table
(:mod:`ldapdkim.config.keywords`), with its converter, its default and a
one-line doc; the defaults of :class:`Settings` are converted from it.

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
from ldapdkim.config.directorysource import DirectorySource
from ldapdkim.config.hostlist import HostList
from ldapdkim.config.keywords import BY_NAME, KEYWORDS, UNSUPPORTED, Keyword
from ldapdkim.config.ldap import ADMIN_BIND_KEYWORDS, LdapSettings
from ldapdkim.config.secret import Secret, unsafe
from ldapdkim.errors import ConfigError
from ldapdkim.model import Action, Alignment, Canonicalization, DirectorySync, Outcome
from ldapdkim.sealing import KeyEncryptionKey


def _default(keyword: Keyword) -> Any:
    """The default value of a keyword's field, converted from the table's text."""
    if keyword.default is None:
        return keyword.empty
    return keyword.convert(values.Context("<default>", 0, keyword.name), keyword.default)


# Settings field -> default; where two keywords share a field, the first one's default.
_DEFAULTS: dict[str, Any] = {}
for _keyword in KEYWORDS:
    if _keyword.outcome is None:
        _DEFAULTS.setdefault(_keyword.field, _default(_keyword))


def _default_actions() -> Mapping[Outcome, Action]:
    return types.MappingProxyType(
        {
            kw.outcome: kw.convert(values.Context("<default>", 0, kw.name), str(kw.default))
            for kw in KEYWORDS
            if kw.outcome is not None
        }
    )


@dataclass(frozen=True)
class Settings:
    """The whole validated configuration.  Build it with :func:`load` or :func:`parse`.

    Fields hold the defaults of the keyword table; ``Settings()`` itself skips
    the cross-checks that :func:`parse` makes.
    """

    source: str = "<defaults>"
    mode: str = _DEFAULTS["mode"]
    socket: str = _DEFAULTS["socket"]
    no_reply_over_tcp: bool = _DEFAULTS["no_reply_over_tcp"]
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
    arc_verify: bool = _DEFAULTS["arc_verify"]
    arc_seal: bool = _DEFAULTS["arc_seal"]
    arc_seal_hosts: HostList = _DEFAULTS["arc_seal_hosts"]
    arc_seal_logins: tuple[str, ...] = _DEFAULTS["arc_seal_logins"]
    arc_seal_domain: str = _DEFAULTS["arc_seal_domain"]
    """``envelope-sender``, ``recipient`` or a fixed domain (:data:`values.ARC_SEAL_RULES`)."""
    arc_auth_results_comments: bool = _DEFAULTS["arc_auth_results_comments"]
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
    def streams_steps(self) -> bool:
        """The MTA may send the steps that always continue without waiting for their replies:
        on a Unix socket, or over TCP with ``NoReplyOverTCP``."""
        return self.socket_is_local or self.no_reply_over_tcp

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
    given: dict[str, tuple[Keyword, str, int]] = {}
    repeated: dict[str, list[tuple[str, int]]] = {}
    for number, name, value in keyword_lines(text):
        keyword = BY_NAME.get(name.lower())
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
    source: str, keyword: Keyword, lines: list[tuple[str, int]], require_safe: bool
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
    if lower in UNSUPPORTED:
        spelled, hint = UNSUPPORTED[lower]
        raise ConfigError(
            f"{source}:{number}: OpenDKIM keyword {spelled!r} is not supported by ldapdkim; {hint}"
        )
    stem = re.split(r"[=:]", name, maxsplit=1)[0]
    if stem != name and stem.lower() in BY_NAME:
        spelled = BY_NAME[stem.lower()].name
        raise ConfigError(
            f"{source}:{number}: unknown keyword {name!r}; write '{spelled} VALUE' "
            "(keyword, blank, value)"
        )
    spellings = {kw.name.lower(): kw.name for kw in KEYWORDS}
    spellings.update({key: spelled for key, (spelled, _) in UNSUPPORTED.items()})
    close = difflib.get_close_matches(lower, list(spellings), n=1)
    if close:
        raise ConfigError(
            f"{source}:{number}: unknown keyword {name!r}; did you mean {spellings[close[0]]!r}?"
        )
    raise ConfigError(
        f"{source}:{number}: unknown keyword {name!r}; remove the line, or check the spelling "
        "against the keyword list in ldapdkim.conf(5)"
    )


def _check_one_password(source: str, given: Mapping[str, tuple[Keyword, str, int]]) -> None:
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


def _check_secret_files(source: str, given: Mapping[str, tuple[Keyword, str, int]]) -> None:
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
