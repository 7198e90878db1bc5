"""``ldapdkim migrate``: LDIF that reproduces an OpenDKIM signing set-up (tables, KeyFile or
contrib LDAP)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ldapdkim.cli import options
from ldapdkim.cli.options import Parents, Subparsers
from ldapdkim.config.ldap import LdapSettings
from ldapdkim.directory import ldifout
from ldapdkim.errors import (
    UsageError,
)
from ldapdkim.lifecycle import migrate
from ldapdkim.log import setup_cli_logging


def add_parser(sub: Subparsers, parents: Parents) -> None:
    p = sub.add_parser(
        "migrate",
        parents=[parents.common],
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
    p.add_argument(
        "--starttls", action="store_true", help="issue StartTLS on an ldap:// --from-ldap URL"
    )
    p.add_argument(
        "--tls-ca-file",
        metavar="FILE",
        help="PEM file of the CAs trusted for the server's certificate (ldaps:// or --starttls)",
    )
    p.add_argument(
        "--sasl-mechanism",
        metavar="MECH",
        help="bind with SASL instead: EXTERNAL (ldapi:// or a TLS client certificate), "
        "GSSAPI, DIGEST-MD5 ...; --sasl-user and --bind-password-file name the user",
    )
    p.add_argument("--sasl-user", metavar="NAME", help="SASL user to authenticate as (authcid)")
    p.add_argument("--base", required=True, metavar="DN", help="where the domain entries go")
    p.add_argument("-o", "--output", metavar="FILE", help="LDIF output, mode 0600 (default stdout)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.opendkim_conf:
        if args.bind_dn or args.bind_password_file:
            raise UsageError("--bind-dn and --bind-password-file go with --from-ldap")
        if args.starttls or args.tls_ca_file or args.sasl_mechanism or args.sasl_user:
            raise UsageError(
                "--starttls, --tls-ca-file, --sasl-mechanism and --sasl-user go with --from-ldap"
            )
    migrate.check_base(args.base)
    if args.from_ldap:
        entries = migrate.read_contrib_ldap(*_contrib_connection(args))
        result = migrate.from_contrib_entries(entries, args.base)
    else:
        result = migrate.from_opendkim_conf(Path(args.opendkim_conf), args.base)
    text = ldifout.render(result.records)
    if args.output:
        options.write_private(Path(args.output), text.encode())  # holds private keys
    else:
        options.warn_if_terminal("the LDIF")
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


def _contrib_connection(args: argparse.Namespace) -> tuple[LdapSettings, str]:
    """How to reach the server of ``--from-ldap``, and the base DN to read below ("": all)."""
    if args.sasl_mechanism:
        if args.bind_dn:
            raise UsageError("--bind-dn is a simple bind; with --sasl-mechanism use --sasl-user")
    elif args.sasl_user:
        raise UsageError("--sasl-user goes with --sasl-mechanism")
    elif bool(args.bind_dn) != bool(args.bind_password_file):
        raise UsageError("--bind-dn and --bind-password-file go together")
    if args.tls_ca_file and not Path(args.tls_ca_file).is_file():
        raise UsageError(f"--tls-ca-file {args.tls_ca_file}: no such file")
    password = None
    if args.bind_password_file:
        password = migrate.read_password_file(Path(args.bind_password_file))
        setup_cli_logging(args.verbose, secrets=[password.reveal()])
    server, base = migrate.contrib_source(args.from_ldap)
    mechanism = args.sasl_mechanism.upper() if args.sasl_mechanism else None
    connection = LdapSettings(
        uris=(server,),
        base_dn="",
        bind_dn=args.bind_dn,
        password=password,
        sasl_mechanism=mechanism,
        sasl_authcid=args.sasl_user,
        start_tls=args.starttls,
        ca_cert_file=Path(args.tls_ca_file).resolve() if args.tls_ca_file else None,
        timeout=10.0,
        credentials=(
            "--sasl-mechanism, --sasl-user and --bind-password-file"
            if mechanism
            else "--bind-dn and --bind-password-file"
        ),
        connection_keywords="the URL, --starttls and --tls-ca-file",
    )
    return connection, base
