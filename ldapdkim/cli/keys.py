"""``ldapdkim keys``: protect the private keys a directory holds
(docs/security.md, "Protecting keys").

``keys new-kek PATH`` makes a key-encryption key: 32 random bytes in a file
only its owner can read, for a ``KeyEncryptionKey ID PATH`` line.
``keys seal`` seals every plaintext key of the directory in place, and
``keys rewrap --to ID`` moves every sealed key to the KEK ``ID``
(:mod:`ldapdkim.lifecycle.sealkeys`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from ldapdkim import sealing
from ldapdkim.cli import options
from ldapdkim.cli.options import Parents, Subparsers
from ldapdkim.directory.writer import DirectoryWriter
from ldapdkim.errors import UsageError
from ldapdkim.lifecycle import sealkeys
from ldapdkim.lifecycle.sealkeys import Outcome

PROGRESS_EVERY = 100
"""A progress line on stderr after this many key entries."""


def add_parser(sub: Subparsers, parents: Parents) -> None:
    p = sub.add_parser("keys", help="seal private keys, move them to another KEK, make a KEK")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    new_kek = actions.add_parser(
        "new-kek",
        parents=[parents.common],
        help="write a new key-encryption key (32 random bytes, mode 0600) to PATH",
    )
    new_kek.add_argument("path", metavar="PATH", type=Path)
    new_kek.set_defaults(func=run_new_kek)
    seal = actions.add_parser(
        "seal",
        parents=[parents.with_config],
        help="seal every plaintext private key of the directory in place",
        description="Binds as LDAPAdminBindUser, reads every key entry below the base DN and "
        "replaces each plaintext dkimSignPrivateKey with its sealed value, each write on the "
        "condition that the entry was not changed meanwhile (RFC 4528).  Sealed values and "
        "pkcs11: URIs are left alone, so it can be run again.  Prints a progress line every "
        f"{PROGRESS_EVERY} entries, each failure, and the counts; exits 1 when a key could "
        "not be sealed.",
    )
    options.kek_option(seal)
    seal.add_argument("--dry-run", action="store_true", help="count, but write nothing")
    seal.set_defaults(func=run_seal)
    rewrap = actions.add_parser(
        "rewrap",
        parents=[parents.with_config],
        help="seal every sealed private key again with the KEK ID",
        description="Binds as LDAPAdminBindUser and, for each key sealed with another KEK "
        "of the configuration, opens it in memory and writes it sealed with ID, on the "
        "condition that the entry still holds the old value (RFC 4528); only sealed values "
        "are sent.  Keys sealed with a KEK the configuration does not have are reported and "
        "left as they are.  Can be run again; exits 1 when a key was not moved.",
    )
    rewrap.add_argument("--to", required=True, metavar="ID", help="the KeyEncryptionKey to move to")
    rewrap.add_argument("--dry-run", action="store_true", help="count, but write nothing")
    rewrap.set_defaults(func=run_rewrap)


def run_new_kek(args: argparse.Namespace) -> int:
    """Write 32 random bytes to a new file that only its owner can read.

    An existing file is never replaced: losing a KEK loses every key sealed with it.
    """
    try:
        fd = os.open(args.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(
            f"{args.path} exists; a KEK is never overwritten (the keys sealed with it would "
            "be lost): choose a new path"
        ) from None
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(os.urandom(sealing.KEK_BYTES))
    print(
        f"ldapdkim: wrote a new {sealing.KEK_BYTES}-byte KEK to {args.path}; name it in "
        f"ldapdkim.conf: KeyEncryptionKey ID {args.path.resolve()}",
        file=sys.stderr,
    )
    return 0


def run_seal(args: argparse.Namespace) -> int:
    settings = options.load(args)
    kek = options.sealing_kek(settings, args.kek)
    if kek is None:
        raise UsageError(
            f"{settings.source} has no KeyEncryptionKey to seal with; make one with "
            "'ldapdkim keys new-kek PATH' and add 'KeyEncryptionKey ID PATH'"
        )
    with DirectoryWriter.for_settings(settings) as writer:
        entries = sealkeys.read_entries(writer)
        steps = (sealkeys.seal_one(writer, e, kek, dry_run=args.dry_run) for e in entries)
        counts = _follow(steps, len(entries))
    print(
        f"{'would seal' if args.dry_run else 'sealed'} {counts[Outcome.SEALED]} with KEK "
        f"{kek.kek_id}, {counts[Outcome.ALREADY]} already sealed, {_others(counts)} "
        f"({len(entries)} key entries)"
    )
    return 1 if counts[Outcome.FAILED] else 0


def run_rewrap(args: argparse.Namespace) -> int:
    settings = options.load(args)
    target = options.sealing_kek(settings, args.to)
    assert target is not None
    keks = {kek.kek_id: kek for kek in settings.key_encryption_keys}
    with DirectoryWriter.for_settings(settings) as writer:
        entries = sealkeys.read_entries(writer)
        steps = (
            sealkeys.rewrap_one(writer, e, keks, target, dry_run=args.dry_run) for e in entries
        )
        counts = _follow(steps, len(entries))
    print(
        f"{'would rewrap' if args.dry_run else 'rewrapped'} {counts[Outcome.REWRAPPED]} to "
        f"KEK {target.kek_id}, {counts[Outcome.ALREADY]} already with it, "
        f"{counts[Outcome.UNKNOWN_KEK]} with an unknown KEK, {counts[Outcome.PLAINTEXT]} "
        f"plaintext, {_others(counts)} ({len(entries)} key entries)"
    )
    return 1 if counts[Outcome.FAILED] or counts[Outcome.UNKNOWN_KEK] else 0


def _follow(steps: Iterable[sealkeys.Step], total: int) -> Counter[Outcome]:
    """Count the outcomes; each problem and a progress line now and then go to stderr."""
    counts: Counter[Outcome] = Counter()
    for done, step in enumerate(steps, 1):
        counts[step.outcome] += 1
        if step.outcome.is_problem:
            print(f"ldapdkim: {step.line()}", file=sys.stderr, flush=True)
        if done % PROGRESS_EVERY == 0 and done < total:
            print(f"ldapdkim: {done} of {total} key entries done", file=sys.stderr, flush=True)
    return counts


def _others(counts: Counter[Outcome]) -> str:
    return (
        f"{counts[Outcome.PKCS11]} in a token, {counts[Outcome.NO_KEY]} without a key, "
        f"{counts[Outcome.FAILED]} failed"
    )
