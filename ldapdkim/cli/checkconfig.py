"""``ldapdkim check-config``: validate the configuration, and open its directory once, like
``opendkim -n``; with ``--connect``, also ask the servers what the milter will need."""

from __future__ import annotations

import argparse
import sys

from ldapdkim import config, orgdomain
from ldapdkim.cli import options
from ldapdkim.cli.options import Parents, Subparsers
from ldapdkim.directory.probe import probe
from ldapdkim.directory.resolution import open_backend, open_directory
from ldapdkim.errors import DirectoryError, DirectoryUnavailable, DnsTemporaryError
from ldapdkim.lifecycle import sealkeys
from ldapdkim.model import Alignment
from ldapdkim.signing.dnslookup import TxtLookup


def add_parser(sub: Subparsers, parents: Parents) -> None:
    p = sub.add_parser(
        "check-config",
        parents=[parents.with_config],
        help="validate the configuration",
        description="With --connect: binds as configured and checks that the base DN exists, "
        "the server knows the schema, the bind may read private keys, content sync is "
        "offered (DirectorySync yes), the KeyFile can be read and the nameservers answer, "
        "and counts the private keys by how they are stored (sealed, by KEK; plaintext; in a "
        "token; sealed with a KEK not configured here).  Keys this host cannot sign with "
        "(unknown KEK, damaged; plaintext with RequireSealedKeys yes) are problems.  Every "
        "problem is reported; the exit status is 2 when there is any.",
    )
    p.add_argument(
        "--connect", action="store_true", help="also ask the directory and the DNS servers"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = options.load(args)
    if settings.sender_alignment is Alignment.ORGANIZATIONAL:
        orgdomain.required(settings.public_suffix_list, settings.source)
    with open_directory(settings):
        pass
    if args.connect:
        problems = connection_problems(settings)
        summary, key_problems = key_protection(settings)
        if summary:
            print(summary)
        problems += key_problems
        for problem in problems:
            print(f"ldapdkim: {problem}", file=sys.stderr)
        if problems:
            return 2
    print(f"{args.config}: OK")
    return 0


def connection_problems(settings: config.Settings) -> list[str]:
    """Everything ``--connect`` finds wrong, in the order it asks."""
    problems = []
    if settings.ldap is not None:
        problems += probe(
            settings.ldap,
            sync_required=settings.directory_sync == "yes",
            sender_login_base=settings.sender_login_base,
        )
    if settings.key_file is not None:
        try:
            settings.key_file.read_bytes()
        except OSError as err:
            problems.append(f"KeyFile {settings.key_file} cannot be read ({err.strerror})")
    lookup = TxtLookup(settings.nameservers, timeout=settings.dns_timeout)
    try:
        lookup("ldapdkim-check._domainkey.invalid")
    except DnsTemporaryError as err:
        problems.append(f"the nameservers do not answer ({err}); check Nameservers")
    return problems


def key_protection(settings: config.Settings) -> tuple[str | None, list[str]]:
    """How the directory's private keys are stored (one line), and the keys this host
    cannot sign with because of it, each named with the fix."""
    try:
        backend = open_backend(settings)
        try:
            entries = [entry for _, key_entries in backend.walk() for entry in key_entries]
        finally:
            backend.close()
    except (DirectoryError, DirectoryUnavailable) as err:
        return None, [f"cannot count the private keys: {err}"]
    counted = sealkeys.census(entries, {kek.kek_id for kek in settings.key_encryption_keys})
    problems = counted.problems(require_sealed=settings.require_sealed_keys, config=settings.source)
    return counted.summary(), problems
