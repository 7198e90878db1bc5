"""A trivial milter that signs nothing and answers at once: the load driver's yardstick.

It speaks the milter protocol directly (no libmilter), in one asyncio event
loop: CONTINUE to every step it did not negotiate away, and at end of message
one inserted ``DKIM-Signature`` header (a fixed dummy value) and ACCEPT.  Run
against it, :mod:`milterload` shows how many messages per second the driver
itself can push on this machine, i.e. the ceiling of any measurement.

By default it negotiates the same steps as ldapdkim does through pymilter
(no HELO, RCPT or unknown commands; on a Unix socket no reply to DATA, the
header fields, end of header and the body; a reply to every other step), so
the driver does the same work per message as against the real milters.
``--split-eom`` writes the inserted header and the final reply separately
with Nagle on, as libmilter does, to show the delayed-ACK stall on demand.
``--quickack`` sets TCP_QUICKACK after every read, so that the MTA's writes
are acknowledged at once even when nothing is answered (``--protocol`` with
``SMFIP_NR_*`` bits over TCP).

From ``tests/``: ``python -m harness.nullmilter --socket inet:PORT@127.0.0.1``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import struct
import sys
from collections.abc import Sequence

from harness import milterproto as mp

DEFAULT_PROTOCOL = mp.SMFIP_NOHELO | mp.SMFIP_NORCPT | mp.SMFIP_NOUNKNOWN
UNIX_NO_REPLIES = mp.SMFIP_NR_DATA | mp.SMFIP_NR_HDR | mp.SMFIP_NR_EOH | mp.SMFIP_NR_BODY
"""Added to the default on a Unix socket, as ldapdkim does."""
DUMMY_SIGNATURE = (
    " v=1; a=rsa-sha256; c=relaxed/simple; d=example.com; s=null;\n\th=from; "
    "bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;\n\tb=AAAA"
)
_CONTINUE = mp.packet(mp.SMFIR_CONTINUE)
_ACCEPT = mp.packet(mp.SMFIR_ACCEPT)
_NO_REPLY = {
    mp.SMFIC_CONNECT: mp.SMFIP_NR_CONN,
    mp.SMFIC_HELO: mp.SMFIP_NR_HELO,
    mp.SMFIC_MAIL: mp.SMFIP_NR_MAIL,
    mp.SMFIC_RCPT: mp.SMFIP_NR_RCPT,
    mp.SMFIC_DATA: mp.SMFIP_NR_DATA,
    mp.SMFIC_UNKNOWN: mp.SMFIP_NR_UNKN,
    mp.SMFIC_HEADER: mp.SMFIP_NR_HDR,
    mp.SMFIC_EOH: mp.SMFIP_NR_EOH,
    mp.SMFIC_BODY: mp.SMFIP_NR_BODY,
}


class NullMilter(asyncio.Protocol):
    """One MTA connection."""

    def __init__(self, wanted_protocol: int, split_eom: bool, quickack: bool = False) -> None:
        self.wanted = wanted_protocol
        self.split_eom = split_eom
        self.quickack = quickack
        self.sock: socket.socket | None = None
        self.protocol = 0
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if self.quickack and sock is not None and sock.family != socket.AF_UNIX:
            self.sock = sock
        if self.split_eom and sock is not None and sock.family != socket.AF_UNIX:
            # libmilter leaves Nagle on; asyncio turns it off by default.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)

    def data_received(self, data: bytes) -> None:
        if self.sock is not None:  # quick mode ends on its own: renew it after each read
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        buffer = self.buffer
        buffer += data
        replies: list[bytes] = []
        while len(buffer) >= 4:
            (length,) = struct.unpack_from("!I", buffer)
            if len(buffer) < 4 + length:
                break
            command = bytes(buffer[4:5])
            payload = bytes(buffer[5 : 4 + length])
            del buffer[: 4 + length]
            if not self._handle(command, payload, replies):
                self._flush(replies)
                assert self.transport is not None
                self.transport.close()
                return
        self._flush(replies)

    def _flush(self, replies: list[bytes]) -> None:
        if replies and self.transport is not None:
            self.transport.write(b"".join(replies))
            replies.clear()

    def _handle(self, command: bytes, payload: bytes, replies: list[bytes]) -> bool:
        if command == mp.SMFIC_OPTNEG:
            _, mta_actions, mta_protocol = mp.parse_optneg(payload)
            self.protocol = self.wanted & mta_protocol
            actions = mp.SMFIF_ADDHDRS & mta_actions
            replies.append(mp.optneg(mp.MILTER_VERSION, actions, self.protocol))
        elif command == mp.SMFIC_BODYEOB:
            header = struct.pack("!I", 0) + mp.nul_strings("DKIM-Signature", DUMMY_SIGNATURE)
            replies.append(mp.packet(mp.SMFIR_INSHEADER, header))
            if self.split_eom:
                self._flush(replies)
            replies.append(_ACCEPT)
        elif command in (mp.SMFIC_QUIT, mp.SMFIC_QUIT_NC):
            return False
        elif command in _NO_REPLY:
            if not self.protocol & _NO_REPLY[command]:
                replies.append(_CONTINUE)
        # SMFIC_MACRO and SMFIC_ABORT get no reply.
        return True


async def serve(spec: str, protocol: int, split_eom: bool, quickack: bool = False) -> None:
    address = mp.MilterAddress.parse(spec)
    loop = asyncio.get_running_loop()
    if protocol == DEFAULT_PROTOCOL and not address.is_tcp:
        protocol |= UNIX_NO_REPLIES

    def factory() -> NullMilter:
        return NullMilter(protocol, split_eom, quickack)

    server: asyncio.base_events.Server
    if address.is_tcp:
        server = await loop.create_server(factory, address.host, address.port, backlog=256)
    else:
        server = await loop.create_unix_server(factory, address.path, backlog=256)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", required=True, help="inet:PORT@HOST or unix:PATH")
    parser.add_argument(
        "--protocol",
        type=lambda text: int(text, 0),
        default=DEFAULT_PROTOCOL,
        help=f"SMFIP_* bits to ask for (default 0x{DEFAULT_PROTOCOL:x}, as ldapdkim)",
    )
    parser.add_argument(
        "--split-eom", action="store_true", help="two writes at end of message, Nagle on"
    )
    parser.add_argument(
        "--quickack", action="store_true", help="TCP_QUICKACK after every read (TCP only)"
    )
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.socket, args.protocol, args.split_eom, args.quickack))
    return 0


if __name__ == "__main__":
    sys.exit(main())
