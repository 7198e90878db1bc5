"""The ``ldapdkim`` command: thin sub-commands over the parts below.

Exit status: 0 success, 1 a runtime outcome (message not signed, signature
not verified, directory down), 2 a usage or configuration error.  Errors are
one line on stderr; ``-v`` adds tracebacks and debug logging.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from ldapdkim import __version__, config, keys
from ldapdkim.config.ldap import LdapSettings
from ldapdkim.directory import ldifout
from ldapdkim.directory.entries import parse_generalized_time
from ldapdkim.directory.replica import status
from ldapdkim.directory.resolution import open_directory
from ldapdkim.directory.resolver import CachedResolver
from ldapdkim.directory.writer import DirectoryWriter
from ldapdkim.domainname import domain_of_address, normalize_domain
from ldapdkim.errors import (
    SIGNING_REFUSALS,
    ConfigError,
    DomainNotSigned,
    InvalidDomain,
    KeyFormatError,
    LdapDkimError,
    StatusUnreadable,
    UsageError,
)
from ldapdkim.lifecycle import migrate, provision
from ldapdkim.lifecycle.rotation import StepKind, advance, find_domain, start_rotation
from ldapdkim.log import setup_cli_logging
from ldapdkim.model import Algorithm, DkimResult, KeyState
from ldapdkim.publish.audit import KeyReport, Level, audit
from ldapdkim.publish.dnsexport import (
    DEFAULT_UPDATE_TTL,
    Adsp,
    KeyRecord,
    nsupdate_lines,
    publication,
    zone_lines,
)
from ldapdkim.publish.dnsupdate import (
    Outcome,
    Server,
    Updater,
    parse_server,
    parse_zone,
    read_tsig_key_file,
    summary,
)
from ldapdkim.signing import policy
from ldapdkim.signing.dnslookup import TxtLookup
from ldapdkim.signing.signer import parse_message, sign_parsed, verify_message

DEFAULT_CONFIG = "/etc/ldapdkim/ldapdkim.conf"

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    setup_cli_logging(args.verbose)
    try:
        result: int = args.func(args)
        return result
    except (ConfigError, UsageError, KeyFormatError) as err:
        _error(err, args.verbose)
        return 2
    except LdapDkimError as err:
        _error(err, args.verbose)
        return 1
    except BrokenPipeError:
        # The reader went away (``ldapdkim sign ... | head``): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as err:
        _error(f"{err.filename}: {err.strerror}" if err.filename else err, args.verbose)
        return 1


def _error(err: Exception | str, verbose: bool) -> None:
    if verbose:
        log.exception("%s", err)
    print(f"ldapdkim: {err}", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ldapdkim",
        description="DKIM signing and verifying with keys and policy in an LDAP directory.",
    )
    parser.add_argument("--version", action="version", version=f"ldapdkim {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="debug output, tracebacks")
    with_config = argparse.ArgumentParser(add_help=False, parents=[common])
    with_config.add_argument(
        "-c",
        "--config",
        default=DEFAULT_CONFIG,
        metavar="FILE",
        help=f"configuration file (default {DEFAULT_CONFIG})",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("check-config", parents=[with_config], help="validate the configuration")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("run", parents=[with_config], help="run the milter (foreground)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("genkey", parents=[common], help="make a key; print its LDIF entry")
    p.add_argument("-d", "--domain", required=True)
    p.add_argument("-s", "--selector", required=True)
    _key_options(p, single=True)
    p.add_argument(
        "--base",
        required=True,
        metavar="DN",
        help="container of the domain entries, e.g. ou=domains,dc=example,dc=com",
    )
    p.add_argument(
        "--domain-dn", metavar="DN", help="the domain's entry, when it is not ou=DOMAIN,BASE"
    )
    p.add_argument("--with-domain", action="store_true", help="also print the domain entry")
    p.add_argument("--state", default="active", choices=[s.value for s in KeyState])
    p.add_argument(
        "--not-before",
        metavar="TIME",
        type=_time_arg,
        help="do not sign before TIME (20270101000000Z or 2027-01-01T00:00Z)",
    )
    p.add_argument("--not-after", metavar="TIME", type=_time_arg, help="do not sign from TIME on")
    p.add_argument("--txt", metavar="FILE", help="write the DNS TXT record here (default stderr)")
    p.add_argument("--private", metavar="FILE", help="also write the private key as PEM (0600)")
    p.set_defaults(func=cmd_genkey)

    p = sub.add_parser(
        "provision",
        parents=[common],
        help="LDIF with a domain entry and keys for every domain in a file",
    )
    p.add_argument("--base", required=True, metavar="DN")
    p.add_argument(
        "--domains", required=True, metavar="FILE", help="one domain per line, '-' for stdin"
    )
    _key_options(p, single=False)
    p.add_argument(
        "-s",
        "--selector",
        default="s%Y%m",
        metavar="FORMAT",
        help="selector, strftime format (default s%%Y%%m); with several "
        "algorithms '-rsa' / '-ed25519' is appended",
    )
    p.add_argument("-o", "--output", metavar="FILE", help="LDIF output (default stdout)")
    p.add_argument("--txt", metavar="FILE", help="write the DNS TXT records here")
    p.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="processes generating keys (default: one per core)",
    )
    p.set_defaults(func=cmd_provision)

    p = sub.add_parser(
        "migrate",
        parents=[common],
        help="LDIF that reproduces an OpenDKIM signing set-up (tables, KeyFile or LDAP)",
        description="Reads opendkim.conf (Domain/Selector/KeyFile, or KeyTable and "
        "SigningTable as file:, refile: or csl:) or OpenDKIM's contrib LDAP entries "
        "(DKIMDomain, DKIMSelector, DKIMKey, DKIMIdentity) and writes a domain entry per "
        "signing domain with an active key entry per selector. What ldapdkim cannot "
        "express is reported on stderr.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--opendkim-conf", metavar="FILE", help="the opendkim.conf to migrate")
    source.add_argument(
        "--from-ldap",
        metavar="URL",
        help="ldap://HOST[:PORT]/BASE-DN holding entries with DKIMSelector",
    )
    p.add_argument("--bind-dn", metavar="DN", help="DN to bind as for --from-ldap")
    p.add_argument(
        "--bind-password-file", metavar="FILE", help="file whose first line is the password"
    )
    p.add_argument("--base", required=True, metavar="DN", help="where the domain entries go")
    p.add_argument("-o", "--output", metavar="FILE", help="LDIF output, mode 0600 (default stdout)")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("sign", parents=[with_config], help="sign one message from stdin")
    p.add_argument(
        "--sender",
        metavar="ADDR",
        help="take the signing domain from ADDR instead of the From field",
    )
    p.set_defaults(func=cmd_sign)

    p = sub.add_parser("verify", parents=[with_config], help="verify one message from stdin")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser(
        "dns-records",
        parents=[with_config],
        help="DNS TXT records of every key: zone-file lines, nsupdate input, or updates sent",
        description="Pending, active and retired keys are published; revoked keys' names "
        "are deleted (nsupdate format and --apply). --apply sends RFC 2136 updates signed "
        "with TSIG to --server and reports each name; it exits 1 when any is not updated.",
    )
    p.add_argument(
        "--format",
        choices=["zone", "nsupdate"],
        help="zone: zone-file lines (default); nsupdate: input for BIND's nsupdate",
    )
    p.add_argument(
        "--ttl",
        type=_ttl_arg,
        help=f"TTL of each record (default: none in zone format, {DEFAULT_UPDATE_TTL} otherwise)",
    )
    p.add_argument(
        "--adsp",
        choices=[a.value for a in Adsp],
        help='also _adsp._domainkey.DOMAIN TXT "dkim=VALUE" per domain (ADSP, RFC 5617: '
        "Historic since 2013, only for older set-ups that still expect it)",
    )
    p.add_argument(
        "--apply",
        action="store_true",
        help="send the records to --server as dynamic updates instead of printing them",
    )
    p.add_argument(
        "--server",
        metavar="HOST[:PORT]",
        help="primary DNS server for --apply, or the nsupdate 'server' line",
    )
    p.add_argument(
        "--zone",
        metavar="ZONE",
        help="put every name into ZONE (default: each domain's zone, from an SOA query "
        "to --server; nsupdate finds it itself)",
    )
    p.add_argument(
        "--tsig-key-file",
        metavar="FILE",
        help='TSIG key for --apply, in BIND\'s format: key "NAME" { algorithm hmac-sha256; '
        'secret "..."; }; (tsig-keygen writes it)',
    )
    p.set_defaults(func=cmd_dns_records)

    p = sub.add_parser(
        "rotate",
        parents=[with_config],
        help="start key rotations (new pending keys), or advance them (--advance, from cron)",
        description="-d/--all adds a pending key per algorithm to each domain and prints its "
        "DNS record.  --advance activates each pending key once DNS has shown its record for "
        "RotationOverlap, and retires the active keys of the same algorithm it replaces; it "
        "exits 1 when something is wrong (e.g. DNS shows another key).  Writes bind as "
        "LDAPAdminBindUser.",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "-d", "--domain", action="append", help="domain to rotate (repeat for several)"
    )
    which.add_argument("--all", action="store_true", help="every domain entry in the directory")
    which.add_argument(
        "--advance", action="store_true", help="activate and retire keys as DNS and time allow"
    )
    p.add_argument(
        "-a",
        "--algorithm",
        action="append",
        choices=[a.value for a in Algorithm],
        help="algorithm of the new key, repeat for several "
        "(default: those of the domain's active keys)",
    )
    p.add_argument(
        "-b",
        "--bits",
        type=int,
        default=keys.DEFAULT_RSA_BITS,
        help=f"RSA key size (default {keys.DEFAULT_RSA_BITS})",
    )
    p.add_argument(
        "--selector-format",
        default="s%Y%m",
        metavar="FORMAT",
        help="strftime format of the new selector (default s%%Y%%m); '-2', '-3' ... is "
        "appended when the domain has it already",
    )
    p.add_argument(
        "--prune",
        action="store_true",
        help="with --advance: also delete keys retired longer than RotationRetireAfter",
    )
    p.set_defaults(func=cmd_rotate)

    p = sub.add_parser(
        "testkey",
        parents=[with_config],
        help="check every key: DNS against the directory, size, age, state",
        description="Exits 1 when any key or domain is bad: an active key that DNS does not "
        "publish or publishes differently, a domain without a signing key, an RSA key under "
        "1024 bits, a DNS error.  Weak keys and revoked keys still in DNS are warnings.",
    )
    p.add_argument("-d", "--domain", help="only this domain's keys")
    p.add_argument(
        "--json", action="store_true", help="one JSON object per line and key, not a table"
    )
    p.set_defaults(func=cmd_testkey)

    p = sub.add_parser(
        "status",
        parents=[with_config],
        help="show the running milter's directory servers (StateDirectory/status.json)",
        description="Exits 0 when a directory server is connected and the status is fresh "
        "(written within 30 s), 1 otherwise, 2 when there is no status file.",
    )
    p.add_argument("--json", action="store_true", help="print status.json as it is")
    p.set_defaults(func=cmd_status)
    return parser


def _key_options(p: argparse.ArgumentParser, *, single: bool) -> None:
    choices = [a.value for a in Algorithm]
    if single:
        p.add_argument("-a", "--algorithm", default=Algorithm.RSA_SHA256.value, choices=choices)
    else:
        p.add_argument(
            "-a",
            "--algorithm",
            action="append",
            choices=choices,
            help="repeat for several keys per domain (default rsa-sha256)",
        )
    p.add_argument(
        "-b",
        "--bits",
        type=int,
        default=keys.DEFAULT_RSA_BITS,
        help=f"RSA key size (default {keys.DEFAULT_RSA_BITS}, at least {keys.MIN_RSA_BITS})",
    )


# -- commands -----------------------------------------------------------------


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _load(args)
    open_directory(settings).backend.close()
    print(f"{args.config}: OK")
    return 0


def _time_arg(text: str) -> datetime:
    """A GeneralizedTime or ISO 8601 time; naive times are UTC."""
    try:
        return parse_generalized_time(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time; use 20270101000000Z or 2027-01-01T00:00+00:00"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def cmd_run(args: argparse.Namespace) -> int:
    from ldapdkim.milter.daemon import Daemon  # pymilter is needed only here

    return Daemon(args.config).run()


def _domain_arg(text: str) -> str:
    try:
        return normalize_domain(text)
    except InvalidDomain as err:
        raise UsageError(str(err)) from None


def _selector_arg(text: str) -> str:
    try:
        return normalize_domain(text)
    except InvalidDomain:
        raise UsageError(
            f"selector {text!r} is not a DNS label (letters, digits, hyphens; dots between labels)"
        ) from None


def cmd_genkey(args: argparse.Namespace) -> int:
    domain = _domain_arg(args.domain)
    selector = _selector_arg(args.selector)
    algorithm = Algorithm.parse(args.algorithm)
    key = keys.generate(algorithm, args.bits)
    parent = args.domain_dn or ldifout.domain_dn(domain, args.base)
    records = []
    if args.with_domain:
        records.append(ldifout.domain_record(domain, args.base))
    records.append(
        ldifout.key_record(
            parent,
            selector,
            key,
            state=KeyState(args.state),
            not_before=args.not_before,
            not_after=args.not_after,
        )
    )
    sys.stdout.write(ldifout.render(records))
    line = next(zone_lines([KeyRecord(domain, selector, algorithm, keys.public_key_b64(key))]))
    if args.txt:
        Path(args.txt).write_text(line + "\n")
    else:
        print(line, file=sys.stderr)
    if args.private:
        _write_private(Path(args.private), keys.private_pem(key))
    return 0


def _write_private(path: Path, pem: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(pem)


def cmd_provision(args: argparse.Namespace) -> int:
    algorithms = [Algorithm.parse(a) for a in (args.algorithm or ["rsa-sha256"])]
    source = sys.stdin if args.domains == "-" else Path(args.domains).open()
    with source:
        domains = provision.read_domains(source, where=args.domains)
    selector_format = datetime.now(UTC).strftime(args.selector)
    plan = provision.Plan(
        base=args.base,
        algorithms=tuple(algorithms),
        bits=args.bits,
        selectors=provision.selectors_for(_selector_arg(selector_format), algorithms),
    )
    out = Path(args.output).open("w") if args.output else sys.stdout
    txt = Path(args.txt).open("w") if args.txt else None
    started = time.monotonic()
    try:
        count = provision.write(
            plan, domains, out, txt, jobs=max(1, args.jobs), progress=sys.stderr.isatty()
        )
    finally:
        if out is not sys.stdout:
            out.close()
        if txt is not None:
            txt.close()
    elapsed = time.monotonic() - started
    print(
        f"ldapdkim: provisioned {count} domains ({count * len(algorithms)} keys) "
        f"in {elapsed:.1f} s",
        file=sys.stderr,
    )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    if args.opendkim_conf and (args.bind_dn or args.bind_password_file):
        raise UsageError("--bind-dn and --bind-password-file go with --from-ldap")
    if bool(args.bind_dn) != bool(args.bind_password_file):
        raise UsageError("--bind-dn and --bind-password-file go together")
    migrate.check_base(args.base)
    if args.from_ldap:
        password = None
        if args.bind_password_file:
            password = migrate.read_password_file(Path(args.bind_password_file))
            setup_cli_logging(args.verbose, secrets=[password.reveal()])
        server, base = migrate.contrib_source(args.from_ldap)
        connection = LdapSettings(
            uris=(server,),
            base_dn="",
            bind_dn=args.bind_dn,
            password=password,
            timeout=10.0,
            credentials="--bind-dn and --bind-password-file",
            connection_keywords="the URL",
        )
        entries = migrate.read_contrib_ldap(connection, base)
        result = migrate.from_contrib_entries(entries, args.base)
    else:
        result = migrate.from_opendkim_conf(Path(args.opendkim_conf), args.base)
    text = ldifout.render(result.records)
    if args.output:
        _write_private(Path(args.output), text.encode())  # holds private keys
    else:
        sys.stdout.write(text)
    for warning in result.warnings:
        print(f"ldapdkim: warning: {warning}", file=sys.stderr)
    for note in result.notes:
        print(f"ldapdkim: note: {note}", file=sys.stderr)
    print(
        f"ldapdkim: migrated {result.domains} domain entries and {result.keys} keys "
        f"to {args.output or 'standard output'}",
        file=sys.stderr,
    )
    return 0


def _load(args: argparse.Namespace) -> config.Settings:
    """The configuration named by ``-c``; its bind passwords join the log redaction."""
    settings = config.load(args.config)
    passwords = (settings.ldap_bind_password, settings.ldap_admin_bind_password)
    setup_cli_logging(args.verbose, secrets=[p.reveal() for p in passwords if p])
    return settings


def cmd_sign(args: argparse.Namespace) -> int:
    settings = _load(args)
    message = sys.stdin.buffer.read()
    try:
        signatures = _sign(settings, message, args.sender)
    except SIGNING_REFUSALS as reason:
        sys.stdout.buffer.write(message)
        print(f"ldapdkim: not signed: {reason}", file=sys.stderr)
        return 1
    newline = b"\r\n" if b"\r\n" in message.split(b"\n\n", 1)[0] else b"\n"
    for value in signatures:
        sys.stdout.buffer.write(b"DKIM-Signature:" + value.replace(b"\r\n", newline) + newline)
    sys.stdout.buffer.write(message)
    return 0


def _sign(settings: config.Settings, message: bytes, sender: str | None) -> list[bytes]:
    if not settings.signs:
        raise DomainNotSigned(f"Mode {settings.mode} does not sign")
    headers, body = parse_message(message)
    author = policy.author_domain(headers)
    domain = domain_of_address(sender) if sender else author
    resolution = CachedResolver.configured(open_directory(settings), settings).resolve(domain)
    now = datetime.now(UTC)
    signing_keys = policy.signing_keys(resolution, now)
    if not signing_keys:
        raise DomainNotSigned(
            f"no active key for {resolution.signing_domain} in {resolution.policy.dn!r}"
        )
    params = policy.signing_params(settings, resolution)
    return sign_parsed(
        headers,
        body,
        resolution.signing_domain,
        signing_keys,
        params,
        timestamp=int(now.timestamp()),
    )


def cmd_verify(args: argparse.Namespace) -> int:
    settings = _load(args)
    message = sys.stdin.buffer.read()
    lookup = TxtLookup(settings.nameservers, timeout=settings.dns_timeout)
    results = verify_message(
        message,
        lookup,
        max_signatures=settings.maximum_signatures_to_verify,
        minimum_key_bits=settings.minimum_key_bits,
    )
    if not results:
        print("none: the message has no DKIM-Signature")
        return 1
    for r in results:
        why = f" ({r.reason})" if r.reason else ""
        print(f"{r.result.value}: d={r.domain} s={r.selector} a={r.algorithm}{why}")
    return 0 if all(r.result is DkimResult.PASS for r in results) else 1


def cmd_rotate(args: argparse.Namespace) -> int:
    settings = _load(args)
    if args.advance:
        if args.algorithm:
            raise UsageError("-a goes with -d or --all; --advance works on the pending keys")
        return _rotate_advance(settings, prune=args.prune)
    if args.prune:
        raise UsageError("--prune goes with --advance")
    if args.bits < keys.MIN_RSA_BITS:
        raise KeyFormatError(
            f"RSA keys of {args.bits} bits are refused; use at least {keys.MIN_RSA_BITS} "
            f"(RFC 8301), {keys.DEFAULT_RSA_BITS} is the default"
        )
    selector = _selector_arg(datetime.now(UTC).strftime(args.selector_format))
    algorithms = [Algorithm.parse(a) for a in args.algorithm] if args.algorithm else None
    directory = open_directory(settings)
    writer = DirectoryWriter.for_settings(settings)
    added = 0
    try:
        if args.all:
            targets = list(directory.walk())
        else:
            targets = [find_domain(directory, _domain_arg(d)) for d in args.domain]
        for domain_policy, domain_keys in targets:
            created, notes = start_rotation(
                writer,
                domain_policy,
                domain_keys,
                algorithms=algorithms,
                selector=selector,
                bits=args.bits,
            )
            for note in notes:
                print(f"ldapdkim: {note}", file=sys.stderr)
            for new in created:
                added += 1
                print(
                    f"ldapdkim: {new.domain}: pending key {new.selector} "
                    f"({new.algorithm.value}) added; publish:",
                    file=sys.stderr,
                )
                for line in new.zone_lines:
                    print(line, flush=True)
    finally:
        writer.close()
        directory.backend.close()
    if added:
        print(
            f"ldapdkim: {added} pending key{'s' if added > 1 else ''} added; once in DNS, "
            "'ldapdkim rotate --advance' activates them after RotationOverlap",
            file=sys.stderr,
        )
    return 0


def _rotate_advance(settings: config.Settings, *, prune: bool) -> int:
    directory = open_directory(settings)
    writer = DirectoryWriter.for_settings(settings)
    lookup = TxtLookup(settings.nameservers, timeout=settings.dns_timeout)
    problems = 0
    try:
        steps = advance(
            directory,
            writer,
            lookup,
            now=datetime.now(UTC),
            overlap=settings.rotation_overlap,
            retire_after=settings.rotation_retire_after if prune else None,
        )
        for step in steps:
            if step.kind is StepKind.PROBLEM:
                problems += 1
                print(f"ldapdkim: {step.line()}", file=sys.stderr, flush=True)
            else:
                print(step.line(), flush=True)
    finally:
        writer.close()
        directory.backend.close()
    return 1 if problems else 0


def cmd_testkey(args: argparse.Namespace) -> int:
    settings = _load(args)
    domain = _domain_arg(args.domain) if args.domain else None
    directory = open_directory(settings)
    lookup = TxtLookup(settings.nameservers, timeout=settings.dns_timeout)
    now = datetime.now(UTC)
    try:
        progress = _progress("testkey: DNS answers") if sys.stderr.isatty() else None
        reports = audit(directory, lookup, now=now, domain=domain, progress=progress)
    finally:
        directory.backend.close()
    if args.json:
        for report in reports:
            print(json.dumps(report.as_json(now)))
    else:
        _print_reports(reports, now)
    counts = {level: sum(r.verdict is level for r in reports) for level in Level}
    print(
        f"ldapdkim: {len(reports)} checked: "
        + ", ".join(f"{counts[level]} {level.label}" for level in reversed(Level)),
        file=sys.stderr,
    )
    return 1 if counts[Level.BAD] else 0


def _print_reports(reports: Sequence[KeyReport], now: datetime) -> None:
    """A table, one row per key and domain name, each row's findings indented below it."""
    head = ("DOMAIN", "SELECTOR", "ALG", "STATE", "BITS", "AGE", "DNS", "VERDICT")
    rows: list[tuple[str, ...]] = []
    for r in reports:
        age = r.age(now)
        rows.append(
            (
                r.domain,
                r.selector or "-",
                r.algorithm.key_type if r.algorithm else "-",
                r.state.value if r.state else "-",
                str(r.bits) if r.bits else "-",
                f"{age.days}d" if age is not None else "-",
                r.dns.status.value if r.dns else "-",
                r.verdict.label,
            )
        )
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip())
    for report, row in zip(reports, rows, strict=True):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        for finding in report.findings:
            print(f"    {finding.level.label}: {finding.text}")


def _progress(label: str) -> Callable[[int, int], None]:
    """A counter redrawn on one stderr line, at most ten times a second."""
    last = 0.0

    def show(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if done < total and now - last < 0.1:
            return
        last = now
        end = "\n" if done >= total else ""
        sys.stderr.write(f"\r{label} {done}/{total}{end}")
        sys.stderr.flush()

    return show


def cmd_status(args: argparse.Namespace) -> int:
    path = status.status_path(_load(args).state_directory)
    try:
        text, report = status.read_status(path)
    except FileNotFoundError:
        _error(status.missing_hint(path), args.verbose)
        return status.MISSING
    except StatusUnreadable as err:
        _error(f"{path}: {err}", args.verbose)
        return status.PROBLEM
    now = status.now_utc()
    sys.stdout.write(text if args.json else status.render(report, now, path))
    return status.exit_status(report, now)


def cmd_dns_records(args: argparse.Namespace) -> int:
    _check_dns_options(args)
    server = _server_arg(args.server) if args.server else None
    zone = _zone_arg(args.zone) if args.zone else None
    settings = _load(args)
    tsig_key = read_tsig_key_file(args.tsig_key_file) if args.apply else None
    if tsig_key is not None:
        password = settings.ldap_bind_password
        secrets = [tsig_key.secret_text, *([password.reveal()] if password else [])]
        setup_cli_logging(args.verbose, secrets=secrets)
    directory = open_directory(settings)
    try:
        wanted = publication(directory.walk(), Adsp(args.adsp) if args.adsp else None)
    finally:
        directory.backend.close()
    outside = wanted.outside(zone) if zone else []
    if outside:
        raise UsageError(
            f"not in zone {zone}: {outside[0]}"
            + (f" and {len(outside) - 1} more" if len(outside) > 1 else "")
            + "; leave out --zone to find each domain's zone"
        )
    update_ttl = DEFAULT_UPDATE_TTL if args.ttl is None else args.ttl
    if args.apply:
        assert server is not None and tsig_key is not None  # _check_dns_options
        updater = Updater(server, tsig_key, ttl=update_ttl, zone=zone, timeout=settings.dns_timeout)
        return _report_updates(updater.apply(wanted), server)
    if args.format == "nsupdate":
        where = (server.host, server.port) if server else None
        lines = nsupdate_lines(wanted, update_ttl, server=where, zone=zone)
    else:
        lines = zone_lines(wanted.records, args.ttl)
    for line in lines:
        print(line)
    return 0


def _check_dns_options(args: argparse.Namespace) -> None:
    if args.apply:
        if args.format:
            raise UsageError(
                "--apply sends the records instead of printing them; leave out --format"
            )
        if not args.server:
            raise UsageError("--apply needs --server HOST[:PORT], the primary server of the zones")
        if not args.tsig_key_file:
            raise UsageError(
                "--apply needs --tsig-key-file FILE: updates are signed with TSIG (RFC 8945); "
                "make a key with tsig-keygen and allow it on the server"
            )
        return
    if args.tsig_key_file:
        raise UsageError(
            "--tsig-key-file goes with --apply; for nsupdate, give the key file to nsupdate -k"
        )
    if args.format != "nsupdate" and (args.server or args.zone):
        raise UsageError("--server and --zone go with --format nsupdate or --apply")


def _report_updates(outcomes: Iterable[Outcome], server: Server) -> int:
    """Print one line per name; on failures, a summary with the fixes on stderr."""
    total, failures = 0, []
    for outcome in outcomes:
        total += 1
        print(outcome, flush=True)
        if not outcome.ok:
            failures.append(outcome)
    if not failures:
        return 0
    print(f"ldapdkim: {summary(failures, total, server)}", file=sys.stderr)
    return 1


def _ttl_arg(text: str) -> int:
    """A TTL: 0 to 2147483647 seconds (RFC 2181 §8)."""
    if not re.fullmatch(r"\d{1,10}", text) or int(text) > 2**31 - 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TTL; use 0 to 2147483647 seconds")
    return int(text)


def _server_arg(text: str) -> Server:
    try:
        return parse_server(text)
    except ValueError as err:
        raise UsageError(f"--server: {err}") from None


def _zone_arg(text: str) -> str:
    try:
        return parse_zone(text)
    except ValueError as err:
        raise UsageError(f"--zone: {err}") from None
