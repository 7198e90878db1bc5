"""``ldapdkim keys``: protect the private keys a directory holds (README, "Protecting keys").

``keys new-kek PATH`` makes a key-encryption key: 32 random bytes in a file
only its owner can read, for a ``KeyEncryptionKey ID PATH`` line.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ldapdkim import sealing
from ldapdkim.cli.options import Parents, Subparsers
from ldapdkim.errors import UsageError


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
