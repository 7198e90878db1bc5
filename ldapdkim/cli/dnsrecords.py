"""``ldapdkim dns-records``: the DNS TXT records of every key, as zone lines, nsupdate input or
RFC 2136 updates."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

from ldapdkim.cli import options
from ldapdkim.cli.options import Parents, Subparsers
from ldapdkim.config.secret import unsafe
from ldapdkim.directory.resolution import open_directory
from ldapdkim.errors import ConfigError, UsageError
from ldapdkim.log import setup_cli_logging
from ldapdkim.publish.dnsexport import (
    DEFAULT_UPDATE_TTL,
    Adsp,
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


def add_parser(sub: Subparsers, parents: Parents) -> None:
    p = sub.add_parser(
        "dns-records",
        parents=[parents.with_config],
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
        type=options.ttl_arg,
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    _check_dns_options(args)
    server = _server_arg(args.server) if args.server else None
    zone = _zone_arg(args.zone) if args.zone else None
    settings = options.load(args)
    if args.apply and settings.require_safe_keys:
        problem = unsafe(Path(args.tsig_key_file))
        if problem is not None:
            raise ConfigError(
                f"--tsig-key-file {args.tsig_key_file} {problem}, or set RequireSafeKeys no"
            )
    tsig_key = read_tsig_key_file(args.tsig_key_file) if args.apply else None
    if tsig_key is not None:
        password = settings.ldap_bind_password
        secrets = [tsig_key.secret_text, *([password.reveal()] if password else [])]
        setup_cli_logging(args.verbose, secrets=secrets)
    with open_directory(settings) as directory:
        wanted = publication(directory.walk(), Adsp(args.adsp) if args.adsp else None)
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
