"""Turn an OpenDKIM signing set-up into directory entries (LDIF records).

Two sources are read:

- an ``opendkim.conf`` (opendkim.conf(5)): single-key mode (``Domain``,
  ``Selector``, ``KeyFile``), or ``KeyTable`` and ``SigningTable`` held in
  ``file:``, ``refile:`` or ``csl:`` data sets (opendkim(8), DATA SETS);
- entries of OpenDKIM's contrib LDAP schema as Zimbra keeps them
  (``DKIMDomain``, ``DKIMSelector``, ``DKIMKey``, optional ``DKIMIdentity``),
  read from an LDAP server by :func:`read_contrib_ldap`.

Both become the same tables, and the tables are *asked* what OpenDKIM asks
them: for a sender in every domain the SigningTable names, and for one in a
subdomain of it, in OpenDKIM's lookup order (``refile:`` top to bottom; other
tables ``user@host``, ``host``, ``user@.parent``, ``.parent``, ...,
``user@*``, ``*``) with its first-match rule unless ``MultipleSignatures``.
So ordering and precedence carry over, not just the lines.

The answer becomes one domain entry per signing domain (``d=``) whose
``dkimSignDomainName`` lists the From domains it signs for, and one active
key entry per selector beneath it.  ``dkimSignSubdomains`` is written on
every entry, TRUE or FALSE, because in OpenDKIM it follows from the tables
domain by domain; the global signing keywords (Canonicalization,
SignHeaders, OversignHeaders, SignatureTTL) mean the same in ldapdkim.conf
and are listed for the administrator to copy there, so one line keeps
governing every domain.

What ldapdkim cannot express is reported as a warning, never dropped in
silence: rules for particular senders (signing in ldapdkim is per domain), patterns
that match every domain, a ``d=`` other than the From domain or its parent,
Lua scripts, and OpenDKIM keywords without an ldapdkim equivalent.  Tables in
databases (``db:``, ``dsn:``, ``ldap:`` ...) are errors that say how to export
them.  No message carries key material.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ldapdkim import config
from ldapdkim.config.datasets import read_dataset
from ldapdkim.domainname import normalize_domain, normalize_selector
from ldapdkim.errors import ConfigError, InvalidDomain, InvalidSelector
from ldapdkim.lifecycle.migrate.contrib import (
    CONTRIB_ATTRIBUTES,
    contrib_source,
    from_contrib_entries,
    read_contrib_ldap,
    read_password_file,
)
from ldapdkim.lifecycle.migrate.differences import differences
from ldapdkim.lifecycle.migrate.differences import notes as differences_notes
from ldapdkim.lifecycle.migrate.opendkimconf import Setting, boolean, read_conf
from ldapdkim.lifecycle.migrate.plan import (
    Entry,
    KeyLoader,
    Migration,
    Report,
    assign,
    build_records,
    check_base,
    migration_of,
    plan_entries,
)
from ldapdkim.lifecycle.migrate.tables import KeyRow, Match, Row, Tables, key_table, read_table

__all__ = [
    "CONTRIB_ATTRIBUTES",
    "SIGNING_KEYWORDS",
    "Migration",
    "check_base",
    "contrib_source",
    "from_contrib_entries",
    "from_opendkim_conf",
    "read_contrib_ldap",
    "read_password_file",
]

SIGNING_KEYWORDS = ("Canonicalization", "SignHeaders", "OversignHeaders", "SignatureTTL")
"""Global signing settings that keep their keyword and meaning in ldapdkim.conf."""


_LUA_KEYWORDS = (
    "SetupPolicyScript",
    "ScreenPolicyScript",
    "FinalPolicyScript",
    "StatisticsPolicyScript",
)


_CONSUMED = frozenset(
    name.lower()
    for name in (
        "KeyTable",
        "SigningTable",
        "Domain",
        "Selector",
        "KeyFile",
        "SubDomains",
        "MultipleSignatures",
        "SignatureAlgorithm",
        "Include",
        "BaseDirectory",
        "RequireSafeKeys",
        *_LUA_KEYWORDS,
    )
)


def from_opendkim_conf(path: Path, base: str) -> Migration:
    """The entries that reproduce the signing of the OpenDKIM configuration at ``path``.

    Relative paths in it are taken from its ``BaseDirectory``, else from the
    current directory, as OpenDKIM does.

    Raises:
        ConfigError: unreadable files, bad table lines (FILE:LINE), tables
            in databases, or no signing set-up at all.
        KeyFormatError: a key that is not an RSA or Ed25519 private key.
    """
    check_base(base)
    conf = read_conf(path)
    report = Report()
    base_dir = Path(conf["basedirectory"].value) if "basedirectory" in conf else Path.cwd()
    loader = KeyLoader(base_dir)
    keytable, signing = conf.get("keytable"), conf.get("signingtable")
    single = [conf[k] for k in ("domain", "selector", "keyfile") if k in conf]
    if keytable is not None and signing is not None:
        if single:
            report.warn(
                f"{single[0].where}: {', '.join(s.spelled for s in single)} are ignored by "
                "OpenDKIM when a KeyTable is set; not migrated"
            )
        entries = _from_tables(keytable, signing, conf, base_dir, loader, report)
    elif keytable is not None:
        raise ConfigError(
            f"{keytable.where}: KeyTable without SigningTable: keys are chosen by a Lua "
            "SetupPolicyScript, which migrate cannot read; write a SigningTable for it, "
            "or make the domain entries with 'ldapdkim genkey'"
        )
    elif signing is not None:
        raise ConfigError(
            f"{signing.where}: SigningTable without KeyTable; OpenDKIM refuses this too: "
            "add the KeyTable"
        )
    elif len(single) == 3:
        entries = _from_single_key(conf, base_dir, loader, report)
    else:
        raise ConfigError(
            f"{path}: no signing set-up: neither KeyTable and SigningTable nor Domain, "
            "Selector and KeyFile together; give the configuration opendkim signs with"
        )
    _carry_over(conf, report)
    return migration_of(build_records(entries, base, report), report)


def _from_tables(
    keytable: Setting,
    signing: Setting,
    conf: Mapping[str, Setting],
    base_dir: Path,
    loader: KeyLoader,
    report: Report,
) -> dict[str, Entry]:
    _, key_rows = read_table(keytable, base_dir)
    kind, signing_rows = read_table(signing, base_dir)
    for row in signing_rows:
        if not row.value.partition(":")[0].strip():
            raise ConfigError(
                f"{row.where}: SigningTable entry {row.key!r} names no key; write "
                f"{row.key} KEYNAME, with KEYNAME from the KeyTable"
            )
    tables = Tables(
        key_table(key_rows, report.warn),
        signing_rows,
        patterns=kind == "refile",
        multiple=boolean(conf.get("multiplesignatures")),
        warn=report.warn,
    )
    if "subdomains" in conf:
        report.note(
            f"{conf['subdomains'].where}: SubDomains applies to Domain only, which a KeyTable "
            "replaces; each entry's dkimSignSubdomains follows the SigningTable instead"
        )
    return plan_entries(tables, loader, report)


def _from_single_key(
    conf: Mapping[str, Setting], base_dir: Path, loader: KeyLoader, report: Report
) -> dict[str, Entry]:
    domain_setting, selector_setting, key_setting = (
        conf["domain"],
        conf["selector"],
        conf["keyfile"],
    )
    try:
        selector = normalize_selector(selector_setting.value)
    except InvalidSelector as err:
        raise ConfigError(f"{selector_setting.where}: Selector {err}") from None
    key_path = key_setting.value
    if not key_path.startswith("/"):
        key_path = "./" + key_path
    row = KeyRow("KeyFile", "%", selector, key_path, None, key_setting.where, False)
    try:
        listed = read_dataset(domain_setting.value, base=base_dir)
    except ValueError as err:
        raise ConfigError(f"{domain_setting.where}: Domain: {err}") from None
    subdomains = boolean(conf.get("subdomains"))
    entries: dict[str, Entry] = {}
    for item in listed:
        if item.text == "*":
            report.warn(
                f"{domain_setting.where}: Domain '*' signs every domain; ldapdkim signs only "
                "domains with an entry: not migrated"
            )
            continue
        try:
            domain = normalize_domain(item.text)
        except InvalidDomain as err:
            raise ConfigError(f"{domain_setting.where}: Domain{item.where}: {err}") from None
        rule = Row(domain, "KeyFile", domain_setting.where)
        assign(entries, domain, subdomains, [Match(rule, row, domain, None)], loader, report)
    return entries


def _carry_over(conf: Mapping[str, Setting], report: Report) -> None:
    """Tell which OpenDKIM keywords to copy into ldapdkim.conf, and which do not carry over."""
    shared = {name.lower(): name for name, _, _ in config.keyword_reference()}
    differing = differences(conf)
    for warnings in differing.values():
        for warning in warnings:
            report.warn(warning)
    signing, same, lost = [], [], []
    for key, setting in sorted(conf.items(), key=lambda item: item[1].line):
        if key in _CONSUMED:
            continue
        if key in {k.lower() for k in SIGNING_KEYWORDS}:
            # Validated as ldapdkim would read it, at the line where it stands.
            text = "\n" * (setting.line - 1) + f"{shared[key]} {setting.value}\nMode v\n"
            try:
                config.parse(text, str(setting.source))
            except ConfigError as err:
                report.warn(f"{err}; not carried over")
                continue
            signing.append(f"{shared[key]} {setting.value}")
        elif key in differing:
            continue  # warned about above
        elif key in shared:
            same.append(shared[key])
        else:
            lost.append(setting.spelled)
    if signing:
        report.note(
            "copy these lines into ldapdkim.conf, where they apply to every domain as in "
            "OpenDKIM: " + "; ".join(signing)
        )
    if same:
        report.note(f"these keywords mean the same in ldapdkim.conf: {', '.join(same)}")
    for note in differences_notes(conf):
        report.note(note)
    for name in _LUA_KEYWORDS:
        if name.lower() in conf:
            report.warn(
                f"{conf[name.lower()].where}: {name} runs a Lua script, whose decisions are "
                "not migrated; express them as domain entries"
            )
    if boolean(conf.get("multiplesignatures")):
        report.note(
            "MultipleSignatures: in ldapdkim every active key of a domain signs; that is how "
            "the matches found for each domain were kept"
        )
    if "signaturealgorithm" in conf:
        report.note(
            "SignatureAlgorithm is not needed: each key entry's dkimSignAlgorithm follows its "
            "key type"
        )
    if lost:
        report.warn(
            f"OpenDKIM keywords with no ldapdkim equivalent, not carried over: {', '.join(lost)}"
        )
