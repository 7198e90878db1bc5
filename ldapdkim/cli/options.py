"""What the sub-commands share: parent parsers, argument converters, loading the configuration.

Converters raise :class:`argparse.ArgumentTypeError` where argparse calls them
(``type=``), and :class:`~ldapdkim.errors.UsageError` where a command calls
them itself; both end as one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TypeAlias

import ldap.dn

from ldapdkim import config, keys
from ldapdkim.directory import ldifout
from ldapdkim.directory.entries import parse_generalized_time
from ldapdkim.domainname import normalize_domain, normalize_selector
from ldapdkim.errors import InvalidDomain, InvalidSelector, UsageError
from ldapdkim.log import setup_cli_logging
from ldapdkim.model import Algorithm, Alignment
from ldapdkim.sealing import KeyEncryptionKey

DEFAULT_CONFIG = "/etc/ldapdkim/ldapdkim.conf"

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""What ``add_subparsers`` returns; argparse gives the class no public name."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Parents:
    """The parent parsers a sub-command inherits its options from."""

    common: argparse.ArgumentParser
    """``-v``."""
    with_config: argparse.ArgumentParser
    """``-v`` and ``-c FILE``, for the commands that read the configuration."""

    @classmethod
    def make(cls) -> Parents:
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
        return cls(common, with_config)


def delegation_options(p: argparse.ArgumentParser) -> None:
    """Who may sign for the new domain entries (dkimSignAllowedSender and the like)."""
    p.add_argument(
        "--allowed-sender",
        action="append",
        default=[],
        metavar="LOGIN|GROUP-DN",
        help="a login or group DN that may send as any address of the domain (repeatable)",
    )
    p.add_argument(
        "--allowed-network",
        action="append",
        default=[],
        metavar="CIDR",
        help="a network whose mail is signed for the domain without a login (repeatable)",
    )
    p.add_argument(
        "--sender-alignment",
        choices=[a.value for a in Alignment],
        help="MAIL FROM must match From before signing (default: SenderAlignment)",
    )
    p.add_argument(
        "--arc-selector",
        metavar="SELECTOR",
        help="the domain seals ARC sets with its key of this selector (dkimSignArcSelector)",
    )


def delegation_arg(args: argparse.Namespace) -> ldifout.Delegation:
    """The delegation the options ask for; a bad network is a usage error."""
    networks = []
    for text in args.allowed_network:
        try:
            networks.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            raise UsageError(
                f"--allowed-network {text!r} is not an address or network; give e.g. "
                "192.0.2.0/24 or 2001:db8::/32"
            ) from None
    senders = tuple(s.strip() for s in args.allowed_sender if s.strip())
    arc_selector = None
    if args.arc_selector:
        try:
            arc_selector = normalize_selector(args.arc_selector)
        except InvalidSelector as err:
            raise UsageError(f"--arc-selector {args.arc_selector!r}: {err}") from None
    return ldifout.Delegation(senders, tuple(networks), args.sender_alignment, arc_selector)


def key_options(p: argparse.ArgumentParser, *, single: bool) -> None:
    """``-a`` (once, or repeated when ``single`` is False) and ``-b`` for new keys."""
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


def kek_option(p: argparse.ArgumentParser) -> None:
    """``--kek ID``: which KeyEncryptionKey of the configuration seals new keys."""
    p.add_argument(
        "--kek",
        metavar="ID",
        help="seal with the KeyEncryptionKey named ID (default: the first KeyEncryptionKey line)",
    )


def sealing_kek(settings: config.Settings, kek_id: str | None) -> KeyEncryptionKey | None:
    """The KEK that seals new keys: ``kek_id``'s, else the first KeyEncryptionKey line's;
    None when the configuration has none (new keys are then stored in plaintext).

    Raises:
        UsageError: no KeyEncryptionKey has id ``kek_id``, or none is configured while
            RequireSealedKeys is yes.
    """
    keks = settings.key_encryption_keys
    if kek_id is None:
        if not keks and settings.require_sealed_keys:
            raise UsageError(
                f"{settings.source}: RequireSealedKeys is yes but no KeyEncryptionKey seals "
                "new keys; make one with 'ldapdkim keys new-kek PATH' and add "
                "'KeyEncryptionKey ID PATH'"
            )
        return keks[0] if keks else None
    for kek in keks:
        if kek.kek_id == kek_id:
            return kek
    known = ", ".join(k.kek_id for k in keks) or "none"
    raise UsageError(
        f"{settings.source} has no KEK {kek_id!r} (KeyEncryptionKey lines: {known}); "
        f"add 'KeyEncryptionKey {kek_id} PATH' or name another"
    )


def seal_options(p: argparse.ArgumentParser) -> None:
    """``-c FILE`` and ``--kek ID`` for the commands that print new keys without a configuration."""
    p.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="seal the private keys with a KeyEncryptionKey of FILE (the first line's, or "
        "--kek's); without -c they are written in plaintext",
    )
    kek_option(p)


def new_key_kek(args: argparse.Namespace) -> KeyEncryptionKey | None:
    """The KEK :func:`seal_options` ask for, or None for plaintext keys."""
    if args.config is None:
        if args.kek is not None:
            raise UsageError("--kek needs -c FILE, the configuration with its KeyEncryptionKey")
        return None
    return sealing_kek(load(args), args.kek)


def load(args: argparse.Namespace) -> config.Settings:
    """The configuration named by ``-c``; its bind passwords join the log redaction."""
    settings = config.load(args.config)
    passwords = (settings.ldap_bind_password, settings.ldap_admin_bind_password)
    setup_cli_logging(args.verbose, secrets=[p.reveal() for p in passwords if p])
    return settings


def error(err: Exception | str, verbose: bool) -> None:
    """One line on stderr; with ``-v`` the traceback goes to the log as well."""
    if verbose:
        log.exception("%s", err)
    print(f"ldapdkim: {err}", file=sys.stderr)


def _private_fd(path: Path) -> int:
    """A descriptor on ``path`` for writing: created 0600 whatever the umask, or made 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def open_private(path: Path) -> IO[str]:
    """``path`` opened for text that holds private keys, readable by its owner only."""
    return os.fdopen(_private_fd(path), "w")


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` (it holds private keys) to ``path``, readable by its owner only."""
    with os.fdopen(_private_fd(path), "wb") as out:
        out.write(data)


def warn_if_terminal(what: str) -> None:
    """Private keys should not scroll past on a screen: say so when stdout is a terminal."""
    if sys.stdout.isatty():
        print(
            f"ldapdkim: warning: {what} holds private keys and goes to the terminal; "
            "write it to a file (mode 0600) instead",
            file=sys.stderr,
        )


def time_arg(text: str) -> datetime:
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


def ttl_arg(text: str) -> int:
    """A TTL: 0 to 2147483647 seconds (RFC 2181 §8)."""
    if not re.fullmatch(r"\d{1,10}", text) or int(text) > 2**31 - 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TTL; use 0 to 2147483647 seconds")
    return int(text)


def domain_arg(text: str) -> str:
    """A mail domain, normalized as From domains are."""
    try:
        return normalize_domain(text)
    except InvalidDomain as err:
        raise UsageError(str(err)) from None


def selector_arg(text: str) -> str:
    """A selector, by the one rule of RFC 6376 §3.1 that the configuration and migrate use."""
    try:
        return normalize_selector(text)
    except InvalidSelector:
        raise UsageError(
            f"selector {text!r} is not a DNS label (letters, digits, hyphens; dots between labels)"
        ) from None


def base_dn_arg(text: str) -> str:
    """A base DN for new entries (``--base``)."""
    if not text or not ldap.dn.is_dn(text):
        raise UsageError(f"--base {text!r} is not a DN; write it like ou=domains,dc=example,dc=com")
    return text
