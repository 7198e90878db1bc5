"""``genkey --pkcs11``: the key pair is made inside a PKCS #11 token; the entry gets its URI.

The token's module and user PIN come from ``--pkcs11-module`` and
``--pin-file``, or else from ``PKCS11Module`` and ``PKCS11PinFile`` of the
configuration file (``-c``), the ones the milter signs with.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ldapdkim import keys
from ldapdkim.cli import options
from ldapdkim.config.secret import Secret, read_secret_file
from ldapdkim.errors import KeyFormatError, UsageError
from ldapdkim.model import Algorithm
from ldapdkim.pkcs11uri import Pkcs11Uri
from ldapdkim.signing.token import Pkcs11Token


def add_options(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("keys in a PKCS#11 token")
    group.add_argument(
        "--pkcs11",
        action="store_true",
        help="make the key pair inside the token (the private key never leaves it); the "
        "entry holds its pkcs11: URI",
    )
    group.add_argument(
        "--token", metavar="LABEL", help="the token's label (default: the only token present)"
    )
    group.add_argument(
        "--pkcs11-module", metavar="PATH", help="the token's PKCS#11 module (default PKCS11Module)"
    )
    group.add_argument(
        "--pin-file", metavar="FILE", help="file with the user PIN (default PKCS11PinFile)"
    )


def make_key(args: argparse.Namespace, domain: str, selector: str) -> tuple[bytes, str]:
    """Make the key pair in the token: the ``dkimSignPrivateKey`` value (its URI) and the
    ``p=`` value of its DNS record.

    Raises:
        UsageError: no module or PIN given, or options that do not go with ``--pkcs11``.
        KeyUnavailable: the token cannot be used or did not make the key pair.
    """
    if args.private:
        raise UsageError("--private: a key made with --pkcs11 never leaves its token")
    algorithm = Algorithm.parse(args.algorithm)
    if algorithm is Algorithm.RSA_SHA256 and args.bits < keys.MIN_RSA_BITS:
        raise KeyFormatError(
            f"RSA keys of {args.bits} bits are refused; use at least {keys.MIN_RSA_BITS}"
        )
    module, pin = _module_and_pin(args)
    token = Pkcs11Token(module, pin)
    try:
        uri, public = token.generate(
            Pkcs11Uri(token=args.token), f"{domain}-{selector}", algorithm, args.bits
        )
    finally:
        token.close()
    return str(uri).encode("ascii"), public


def _module_and_pin(args: argparse.Namespace) -> tuple[Path, Secret]:
    module = Path(args.pkcs11_module) if args.pkcs11_module else None
    pin_path = Path(args.pin_file) if args.pin_file else None
    pin: Secret | None = None
    if module is None or pin_path is None:
        if args.config is None or not Path(args.config).exists():
            raise UsageError(
                "--pkcs11 needs the token's module and PIN: give --pkcs11-module and "
                "--pin-file, or -c CONFIG with PKCS11Module and PKCS11PinFile"
                + (f" ({args.config} does not exist)" if args.config else "")
            )
        settings = options.load(args)
        module = module or settings.pkcs11_module
        pin = settings.pkcs11_pin if pin_path is None else None
        if module is None:
            raise UsageError(f"{args.config} sets no PKCS11Module; give --pkcs11-module")
    if pin_path is not None:
        try:
            pin = read_secret_file(pin_path)
        except (OSError, UnicodeDecodeError) as err:
            raise UsageError(f"--pin-file {pin_path} cannot be read ({err})") from None
        if pin is None:
            raise UsageError(f"--pin-file {pin_path} has an empty first line")
    if pin is None:
        raise UsageError(f"{args.config} sets no PKCS11PinFile; give --pin-file")
    return module, pin
