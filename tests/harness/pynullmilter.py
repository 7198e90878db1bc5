"""A pymilter milter that does nothing but answer: the protocol floor of any pymilter milter.

It has ldapdkim's callbacks (connect, MAIL, DATA, each header field, end of
header, body chunks, end of message, abort, close), the same decorators on
them and the same negotiation (:data:`ldapdkim.milter.session.NO_REPLY_STEPS`
skipped on a Unix socket, or on any socket with ``--no-reply``), and at end of
message inserts one ``DKIM-Signature`` field of a fixed dummy value, as
ldapdkim does when it signs (``--answer verify``: an ``Authentication-Results``
field saying ``dkim=pass``, as ldapdkim adds when it verifies).  Its CPU per
message is what libmilter, pymilter and the protocol cost before ldapdkim
does any work of its own.

From ``tests/``: ``python -m harness.pynullmilter --socket inet:PORT@127.0.0.1``
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import Milter

from harness.nullmilter import DUMMY_SIGNATURE
from ldapdkim.milter.session import NO_REPLY_STEPS


@Milter.header_leading_space
class NullPyMilter(Milter.Base):  # type: ignore[misc]
    """One connection; every step continues, end of message inserts a dummy signature."""

    no_reply = False
    """Skip the replies to the no-reply steps on any socket (class-wide, set by main)."""
    answer = ("DKIM-Signature", DUMMY_SIGNATURE)
    """The field inserted at end of message (class-wide, set by main)."""

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []

    def negotiate(self, opts: list[int]) -> int:
        reply: int = super().negotiate(opts)
        if reply == Milter.CONTINUE and not self.no_reply:
            opts[1] &= ~NO_REPLY_STEPS
            self._protocol = opts[1]
        return reply

    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        return Milter.CONTINUE  # type: ignore[no-any-return]

    def envfrom(self, mailfrom: str, *params: str) -> int:
        self.headers = []
        return Milter.CONTINUE  # type: ignore[no-any-return]

    @Milter.noreply  # type: ignore[untyped-decorator]
    def data(self) -> int:
        return Milter.CONTINUE  # type: ignore[no-any-return]

    @Milter.noreply  # type: ignore[untyped-decorator]
    @Milter.decode("bytes")  # type: ignore[untyped-decorator]
    def header(self, name: bytes | str, value: bytes) -> int:
        self.headers.append((name if isinstance(name, bytes) else name.encode(), value))
        return Milter.CONTINUE  # type: ignore[no-any-return]

    @Milter.noreply  # type: ignore[untyped-decorator]
    def eoh(self) -> int:
        return Milter.CONTINUE  # type: ignore[no-any-return]

    @Milter.noreply  # type: ignore[untyped-decorator]
    def body(self, chunk: bytes) -> int:
        return Milter.CONTINUE  # type: ignore[no-any-return]

    def eom(self) -> int:
        self.addheader(*self.answer, 0)
        return Milter.ACCEPT  # type: ignore[no-any-return]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", required=True, help="inet:PORT@HOST or unix:PATH")
    parser.add_argument(
        "--no-reply",
        choices=("auto", "on", "off"),
        default="auto",
        help="skip the no-reply steps' replies: auto (Unix sockets only, as ldapdkim), on, off",
    )
    parser.add_argument(
        "--answer",
        choices=("sign", "verify"),
        default="sign",
        help="insert a dummy DKIM-Signature (sign) or Authentication-Results dkim=pass (verify)",
    )
    parser.add_argument("--authserv-id", default="mx.example.net", help="of the verify answer")
    args = parser.parse_args(argv)
    if args.answer == "verify":
        value = f" {args.authserv_id}; dkim=pass header.d=floor.test"
        NullPyMilter.answer = ("Authentication-Results", value)
    local = not args.socket.startswith("inet")
    NullPyMilter.no_reply = args.no_reply == "on" or (args.no_reply == "auto" and local)
    Milter.factory = NullPyMilter
    print(f"listening on {args.socket}", flush=True)
    Milter.runmilter("pynullmilter", args.socket.replace("local:", "unix:", 1), 30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
