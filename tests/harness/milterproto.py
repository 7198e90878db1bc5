"""The milter wire protocol (version 6) as far as an MTA-side driver needs it.

Every packet is a 4-byte big-endian length (of what follows), one command or
reply byte, and data.  Strings inside the data end with NUL.  This module
holds the constants, packet builders, socket-address parsing and a small
reader for replies; :mod:`milterload` drives sessions with them and
:mod:`nullmilter` answers them.

Written from the protocol as libmilter's ``mfdef.h`` numbers it and as
Postfix and Sendmail speak it; no code is taken from either.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

# -- commands, MTA to milter --------------------------------------------------------

SMFIC_ABORT = b"A"
SMFIC_BODY = b"B"
SMFIC_CONNECT = b"C"
SMFIC_MACRO = b"D"
SMFIC_BODYEOB = b"E"
SMFIC_HELO = b"H"
SMFIC_QUIT_NC = b"K"
SMFIC_HEADER = b"L"
SMFIC_MAIL = b"M"
SMFIC_EOH = b"N"
SMFIC_OPTNEG = b"O"
SMFIC_QUIT = b"Q"
SMFIC_RCPT = b"R"
SMFIC_DATA = b"T"
SMFIC_UNKNOWN = b"U"

# -- replies, milter to MTA ---------------------------------------------------------

SMFIR_ADDRCPT = b"+"
SMFIR_DELRCPT = b"-"
SMFIR_ADDRCPT_PAR = b"2"
SMFIR_SHUTDOWN = b"4"
SMFIR_ACCEPT = b"a"
SMFIR_REPLBODY = b"b"
SMFIR_CONTINUE = b"c"
SMFIR_DISCARD = b"d"
SMFIR_CHGFROM = b"e"
SMFIR_CONN_FAIL = b"f"
SMFIR_ADDHEADER = b"h"
SMFIR_INSHEADER = b"i"
SMFIR_SETSYMLIST = b"l"
SMFIR_CHGHEADER = b"m"
SMFIR_PROGRESS = b"p"
SMFIR_QUARANTINE = b"q"
SMFIR_REJECT = b"r"
SMFIR_SKIP = b"s"
SMFIR_TEMPFAIL = b"t"
SMFIR_REPLYCODE = b"y"

MODIFICATIONS = frozenset(
    {
        SMFIR_ADDRCPT,
        SMFIR_DELRCPT,
        SMFIR_ADDRCPT_PAR,
        SMFIR_REPLBODY,
        SMFIR_CHGFROM,
        SMFIR_ADDHEADER,
        SMFIR_INSHEADER,
        SMFIR_CHGHEADER,
        SMFIR_QUARANTINE,
    }
)
"""Replies that may come before the final one at end of message."""

FINAL_REPLIES = frozenset(
    {SMFIR_ACCEPT, SMFIR_CONTINUE, SMFIR_DISCARD, SMFIR_REJECT, SMFIR_TEMPFAIL, SMFIR_REPLYCODE}
)

# -- address families in SMFIC_CONNECT ---------------------------------------------

SMFIA_UNKNOWN = b"U"
SMFIA_UNIX = b"L"
SMFIA_INET = b"4"
SMFIA_INET6 = b"6"

# -- actions the milter may ask for (SMFIF_*) ---------------------------------------

SMFIF_ADDHDRS = 0x001
SMFIF_CHGBODY = 0x002
SMFIF_ADDRCPT = 0x004
SMFIF_DELRCPT = 0x008
SMFIF_CHGHDRS = 0x010
SMFIF_QUARANTINE = 0x020
SMFIF_CHGFROM = 0x040
SMFIF_ADDRCPT_PAR = 0x080
SMFIF_SETSYMLIST = 0x100
ALL_ACTIONS = 0x1FF

# -- protocol steps and options (SMFIP_*) ------------------------------------------

SMFIP_NOCONNECT = 0x000001
SMFIP_NOHELO = 0x000002
SMFIP_NOMAIL = 0x000004
SMFIP_NORCPT = 0x000008
SMFIP_NOBODY = 0x000010
SMFIP_NOHDRS = 0x000020
SMFIP_NOEOH = 0x000040
SMFIP_NR_HDR = 0x000080
SMFIP_NOUNKNOWN = 0x000100
SMFIP_NODATA = 0x000200
SMFIP_SKIP = 0x000400
SMFIP_RCPT_REJ = 0x000800
SMFIP_NR_CONN = 0x001000
SMFIP_NR_HELO = 0x002000
SMFIP_NR_MAIL = 0x004000
SMFIP_NR_RCPT = 0x008000
SMFIP_NR_DATA = 0x010000
SMFIP_NR_UNKN = 0x020000
SMFIP_NR_EOH = 0x040000
SMFIP_NR_BODY = 0x080000
SMFIP_HDR_LEADSPC = 0x100000
ALL_PROTOCOL = 0x1FFFFF
"""Every step-skipping, no-reply and option bit of version 6; an MTA offers them all."""

PROTOCOL_NAMES = {
    SMFIP_NOCONNECT: "NOCONNECT",
    SMFIP_NOHELO: "NOHELO",
    SMFIP_NOMAIL: "NOMAIL",
    SMFIP_NORCPT: "NORCPT",
    SMFIP_NOBODY: "NOBODY",
    SMFIP_NOHDRS: "NOHDRS",
    SMFIP_NOEOH: "NOEOH",
    SMFIP_NR_HDR: "NR_HDR",
    SMFIP_NOUNKNOWN: "NOUNKNOWN",
    SMFIP_NODATA: "NODATA",
    SMFIP_SKIP: "SKIP",
    SMFIP_RCPT_REJ: "RCPT_REJ",
    SMFIP_NR_CONN: "NR_CONN",
    SMFIP_NR_HELO: "NR_HELO",
    SMFIP_NR_MAIL: "NR_MAIL",
    SMFIP_NR_RCPT: "NR_RCPT",
    SMFIP_NR_DATA: "NR_DATA",
    SMFIP_NR_UNKN: "NR_UNKN",
    SMFIP_NR_EOH: "NR_EOH",
    SMFIP_NR_BODY: "NR_BODY",
    SMFIP_HDR_LEADSPC: "HDR_LEADSPC",
}

MILTER_VERSION = 6
MILTER_CHUNK_SIZE = 65535
"""Largest body chunk an MTA sends unless the milter negotiates bigger ones."""
MAX_PACKET = 1 << 20
"""Refuse replies longer than this: a broken peer, not a milter."""

_LENGTH = struct.Struct("!I")
_THREE = struct.Struct("!III")


class MilterProtocolError(Exception):
    """The peer sent something the protocol does not allow at this point."""


class MilterClosed(MilterProtocolError):
    """The peer closed the connection."""


def packet(command: bytes, data: bytes = b"") -> bytes:
    """One packet: length, command byte, data."""
    return _LENGTH.pack(len(data) + 1) + command + data


def nul_strings(*values: str | bytes) -> bytes:
    """NUL-terminated strings, concatenated (UTF-8 for str; bytes that were decoded with
    ``surrogateescape`` go back as the same bytes)."""
    return b"".join(
        (v.encode("utf-8", "surrogateescape") if isinstance(v, str) else v) + b"\0" for v in values
    )


def optneg(version: int, actions: int, protocol: int) -> bytes:
    """SMFIC_OPTNEG (or, from a milter, its reply)."""
    return packet(SMFIC_OPTNEG, _THREE.pack(version, actions, protocol))


def parse_optneg(data: bytes) -> tuple[int, int, int]:
    """(version, actions, protocol) of an OPTNEG packet; trailing macro lists are ignored."""
    if len(data) < _THREE.size:
        raise MilterProtocolError(f"option negotiation reply of {len(data)} bytes, want 12")
    version, actions, protocol = _THREE.unpack_from(data)
    return version, actions, protocol


def macros(stage: bytes, pairs: dict[str, str]) -> bytes:
    """SMFIC_MACRO for one stage (the command the macros belong to)."""
    flat: list[str] = []
    for name, value in pairs.items():
        flat += [name, value]
    return packet(SMFIC_MACRO, stage + nul_strings(*flat))


def connect_info(hostname: str, family: bytes, port: int, address: str) -> bytes:
    """SMFIC_CONNECT: host name, family, port, address."""
    data = nul_strings(hostname) + family
    if family != SMFIA_UNKNOWN:
        data += struct.pack("!H", port) + nul_strings(address)
    return packet(SMFIC_CONNECT, data)


def protocol_names(bits: int) -> str:
    """The SMFIP_* names set in ``bits``, for humans."""
    names = [name for bit, name in PROTOCOL_NAMES.items() if bits & bit]
    rest = bits & ~ALL_PROTOCOL
    if rest:
        names.append(f"0x{rest:x}")
    return ",".join(names) or "none"


@dataclass(frozen=True)
class MilterAddress:
    """Where a milter listens: ``inet:PORT@HOST``, ``inet6:PORT@HOST``, ``unix:PATH``."""

    family: socket.AddressFamily
    host: str = ""
    port: int = 0
    path: str = ""

    @classmethod
    def parse(cls, spec: str) -> MilterAddress:
        """Parse a milter socket in libmilter's notation (``local:`` = ``unix:``)."""
        kind, sep, rest = spec.partition(":")
        if not sep:
            if spec.startswith("/"):
                return cls(socket.AF_UNIX, path=spec)
            raise ValueError(f"{spec!r}: want inet:PORT@HOST, inet6:PORT@HOST or unix:PATH")
        if kind in ("unix", "local"):
            return cls(socket.AF_UNIX, path=rest)
        if kind in ("inet", "inet6"):
            port_text, _, host = rest.partition("@")
            family = socket.AF_INET6 if kind == "inet6" else socket.AF_INET
            default = "::1" if kind == "inet6" else "127.0.0.1"
            return cls(family, host=host.strip("[]") or default, port=int(port_text))
        raise ValueError(f"{spec!r}: unknown socket kind {kind!r}")

    @property
    def is_tcp(self) -> bool:
        return self.family != socket.AF_UNIX

    @property
    def sockaddr(self) -> str | tuple[str, int]:
        return self.path if self.family == socket.AF_UNIX else (self.host, self.port)

    def __str__(self) -> str:
        if self.family == socket.AF_UNIX:
            return f"unix:{self.path}"
        kind = "inet6" if self.family == socket.AF_INET6 else "inet"
        return f"{kind}:{self.port}@{self.host}"


class PacketReader:
    """Reads whole packets from a connected socket, with an optional TCP_QUICKACK per read.

    The kernel forgets TCP_QUICKACK after it has sent an ACK, so a client that
    wants every ACK at once sets it again after each read.
    """

    def __init__(self, sock: socket.socket, *, quickack: bool) -> None:
        self.sock = sock
        self.quickack = quickack and sock.family != socket.AF_UNIX
        self.buffer = bytearray()
        self.reads = 0

    def read(self) -> tuple[bytes, bytes]:
        """The next packet as (command byte, data)."""
        buffer = self.buffer
        while True:
            if len(buffer) >= 4:
                (length,) = _LENGTH.unpack_from(buffer)
                if length == 0 or length > MAX_PACKET:
                    raise MilterProtocolError(f"packet length {length}")
                end = 4 + length
                if len(buffer) >= end:
                    command = bytes(buffer[4:5])
                    data = bytes(buffer[5:end])
                    del buffer[:end]
                    return command, data
            chunk = self.sock.recv(65536)
            self.reads += 1
            if self.quickack:
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            if not chunk:
                raise MilterClosed("the milter closed the connection")
            buffer += chunk
