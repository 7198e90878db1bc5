"""The ``ldapdkim`` command: thin sub-commands over the parts below.

Exit status: 0 success, 1 a runtime outcome (message not signed, signature
not verified, directory down), 2 a usage or configuration error.  Errors are
one line on stderr; ``-v`` adds tracebacks and debug logging.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from ldapdkim import __version__, config, keys, ldifout, policy, provision
from ldapdkim.directory import open_directory
from ldapdkim.dnsexport import KeyRecord, zone_lines
from ldapdkim.dnslookup import TxtLookup
from ldapdkim.domainname import domain_of_address, normalize_domain
from ldapdkim.entries import parse_generalized_time
from ldapdkim.errors import (
    ConfigError,
    DirectoryError,
    DirectoryUnavailable,
    DomainNotSigned,
    InvalidDomain,
    KeyFormatError,
    LdapDkimError,
    MessageError,
)
from ldapdkim.log import setup_cli_logging
from ldapdkim.model import Algorithm, DkimResult, KeyState
from ldapdkim.resolver import CachedResolver
from ldapdkim.signer import parse_message, sign_parsed, verify_message

DEFAULT_CONFIG = "/etc/ldapdkim/ldapdkim.conf"

log = logging.getLogger(__name__)


class UsageError(LdapDkimError):
    """Bad command-line arguments (exit status 2)."""


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
        help="zone-file TXT lines for every key in the directory",
    )
    p.add_argument("--ttl", type=int, help="TTL to put on each line")
    p.set_defaults(func=cmd_dns_records)
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
    from ldapdkim.daemon import Daemon  # pymilter is needed only here

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


def _load(args: argparse.Namespace) -> config.Settings:
    """The configuration named by ``-c``; its bind password joins the log redaction."""
    settings = config.load(args.config)
    password = settings.ldap_bind_password
    setup_cli_logging(args.verbose, secrets=[password.reveal()] if password else [])
    return settings


def _resolver(settings: config.Settings) -> CachedResolver:
    return CachedResolver(
        open_directory(settings),
        ttl=settings.ldap_cache_ttl,
        negative_ttl=settings.ldap_negative_cache_ttl,
        max_stale=settings.directory_max_stale,
    )


def cmd_sign(args: argparse.Namespace) -> int:
    settings = _load(args)
    message = sys.stdin.buffer.read()
    try:
        signatures = _sign(settings, message, args.sender)
    except (
        MessageError,
        InvalidDomain,
        DomainNotSigned,
        DirectoryError,
        DirectoryUnavailable,
    ) as reason:
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
    resolution = _resolver(settings).resolve(domain)
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


def cmd_dns_records(args: argparse.Namespace) -> int:
    settings = _load(args)
    directory = open_directory(settings)
    records: list[KeyRecord] = []
    for domain_policy, domain_keys in directory.walk():
        for key in domain_keys:
            if key.state is KeyState.REVOKED:
                continue
            public = key.public_key
            if key.private_key is not None:
                derived = keys.public_key_b64(key.private_key)
                if public and public != derived:
                    log.warning(
                        "%s: dkimSignPublicKey does not match the private key; "
                        "publishing the private key's public half",
                        key.dn,
                    )
                public = derived
            if not public:
                log.warning("%s: no public key to publish", key.dn)
                continue
            for name in domain_policy.names:
                records.append(KeyRecord(name, key.selector, key.algorithm, public))
    for line in zone_lines(records, args.ttl):
        print(line)
    directory.backend.close()
    return 0
