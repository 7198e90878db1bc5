"""Play one SMTP transaction to a milter, as an MTA would, and say what the milter did.

For the differential tests: the same transaction (client address and name,
MTA macros, envelope, message) goes to OpenDKIM and to ldapdkim, and the
:class:`Answer` of each is compared.  One connection per transaction, the
protocol steps the milter negotiates (no-reply steps are not waited for), and
the header fields as Postfix hands them: without the line end, folded lines
joined by LF, the space after the colon dropped unless the milter asked for
it (``SMFIP_HDR_LEADSPC``).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from harness import milterproto as mp

REPLIES = {
    mp.SMFIR_ACCEPT: "accept",
    mp.SMFIR_CONTINUE: "continue",
    mp.SMFIR_DISCARD: "discard",
    mp.SMFIR_REJECT: "reject",
    mp.SMFIR_TEMPFAIL: "tempfail",
    mp.SMFIR_REPLYCODE: "replycode",
}


@dataclass(frozen=True)
class Transaction:
    """What the MTA knows and passes on."""

    message: bytes
    """Header and body, CRLF line ends."""
    client_address: str = "127.0.0.1"
    client_name: str = "localhost"
    mail_from: str = "alice@example.com"
    rcpt_to: tuple[str, ...] = ("bob@example.net",)
    connect_macros: dict[str, str] = field(default_factory=dict)
    """``{daemon_name}`` and the like, sent with CONNECT."""
    mail_macros: dict[str, str] = field(default_factory=dict)
    """``{auth_authen}`` and the like, sent with MAIL."""
    queue_id: str = "4XQUEUEID"


@dataclass
class Answer:
    """What the milter did with one transaction."""

    reply: str
    """The final reply: accept, continue, reject, tempfail, discard, or replycode."""
    step: str
    """Where it came: connect, helo, mail, rcpt, data, header, eoh, body or eom."""
    smtp: str = ""
    """The SMTP reply text of ``replycode`` (``550 5.7.1 ...``)."""
    added: list[tuple[str, str]] = field(default_factory=list)
    """Header fields added or inserted, as (name, value with folding removed)."""
    changed: list[tuple[int, str, str]] = field(default_factory=list)
    """Header changes: (index, name, new value; empty to delete)."""
    quarantined: bool = False

    def values(self, name: str) -> list[str]:
        return [value for added, value in self.added if added.lower() == name.lower()]

    @property
    def outcome(self) -> str:
        """How the MTA goes on: continue and accept both deliver the message."""
        if self.reply == "replycode":
            return {"4": "tempfail", "5": "reject"}.get(self.smtp[:1], self.smtp)
        return "accept" if self.reply == "continue" else self.reply


class _Early(Exception):
    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.reply)
        self.answer = answer


def _strings(data: bytes) -> list[str]:
    return [part.decode("utf-8", "replace") for part in data.split(b"\0")[:-1]]


def _unfold(value: str) -> str:
    return " ".join(value.replace("\r\n", "\n").replace("\n", " ").split())


def _split(message: bytes) -> tuple[list[tuple[str, str]], bytes]:
    """The header fields as (name, value after the colon, folds as LF) and the body."""
    head, _, body = message.partition(b"\r\n\r\n")
    fields: list[tuple[str, str]] = []
    for line in head.decode("utf-8", "surrogateescape").split("\r\n"):
        if line[:1] in (" ", "\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, f"{value}\n{line}")
        else:
            name, _, value = line.partition(":")
            fields.append((name, value))
    return fields, body


def play(address: str, transaction: Transaction, timeout: float = 15.0) -> Answer:
    """Run ``transaction`` against the milter at ``address`` (``inet:PORT@HOST``)."""
    where = mp.MilterAddress.parse(address)
    with socket.socket(where.family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(where.sockaddr)
        reader = mp.PacketReader(sock, quickack=False)
        sock.sendall(mp.optneg(mp.MILTER_VERSION, mp.ALL_ACTIONS, mp.ALL_PROTOCOL))
        command, data = reader.read()
        if command != mp.SMFIC_OPTNEG:
            raise mp.MilterProtocolError(f"negotiation answered with {command!r}")
        _, _, protocol = mp.parse_optneg(data)
        try:
            answer = _transaction(sock, reader, protocol, transaction)
        except _Early as early:
            answer = early.answer
        sock.sendall(mp.packet(mp.SMFIC_QUIT))
        return answer


def _transaction(sock: socket.socket, reader: mp.PacketReader, p: int, t: Transaction) -> Answer:
    def step(data: bytes, no_reply: int, name: str, *, skip_ok: bool = False) -> bool:
        sock.sendall(data)
        if p & no_reply:
            return True
        while True:
            command, reply = reader.read()
            if command == mp.SMFIR_CONTINUE:
                return True
            if command == mp.SMFIR_PROGRESS:
                continue
            if command == mp.SMFIR_SKIP and skip_ok:
                return False
            if command in REPLIES:
                raise _Early(_final(command, reply, name))
            raise mp.MilterProtocolError(f"{name}: unexpected reply {command!r}")

    family = mp.SMFIA_INET6 if ":" in t.client_address else mp.SMFIA_INET
    if not p & mp.SMFIP_NOCONNECT:
        step(
            mp.macros(mp.SMFIC_CONNECT, {"j": "mta.test", **t.connect_macros})
            + mp.connect_info(t.client_name, family, 40000, t.client_address),
            mp.SMFIP_NR_CONN,
            "connect",
        )
    if not p & mp.SMFIP_NOHELO:
        step(mp.packet(mp.SMFIC_HELO, mp.nul_strings(t.client_name)), mp.SMFIP_NR_HELO, "helo")
    if not p & mp.SMFIP_NOMAIL:
        macros = {"i": t.queue_id, "{mail_addr}": t.mail_from, **t.mail_macros}
        step(
            mp.macros(mp.SMFIC_MAIL, macros)
            + mp.packet(mp.SMFIC_MAIL, mp.nul_strings(f"<{t.mail_from}>")),
            mp.SMFIP_NR_MAIL,
            "mail",
        )
    if not p & mp.SMFIP_NORCPT:
        for rcpt in t.rcpt_to:
            step(
                mp.macros(mp.SMFIC_RCPT, {"{rcpt_addr}": rcpt})
                + mp.packet(mp.SMFIC_RCPT, mp.nul_strings(f"<{rcpt}>")),
                mp.SMFIP_NR_RCPT,
                "rcpt",
            )
    if not p & mp.SMFIP_NODATA:
        step(
            mp.macros(mp.SMFIC_DATA, {"i": t.queue_id}) + mp.packet(mp.SMFIC_DATA),
            mp.SMFIP_NR_DATA,
            "data",
        )
    fields, body = _split(t.message)
    if not p & mp.SMFIP_NOHDRS:
        for name, value in fields:
            sent = value if p & mp.SMFIP_HDR_LEADSPC else value.removeprefix(" ")
            step(mp.packet(mp.SMFIC_HEADER, mp.nul_strings(name, sent)), mp.SMFIP_NR_HDR, "header")
    if not p & mp.SMFIP_NOEOH:
        step(
            mp.macros(mp.SMFIC_EOH, {"i": t.queue_id}) + mp.packet(mp.SMFIC_EOH),
            mp.SMFIP_NR_EOH,
            "eoh",
        )
    if not p & mp.SMFIP_NOBODY:
        for start in range(0, len(body), mp.MILTER_CHUNK_SIZE):
            chunk = body[start : start + mp.MILTER_CHUNK_SIZE]
            if not step(mp.packet(mp.SMFIC_BODY, chunk), mp.SMFIP_NR_BODY, "body", skip_ok=True):
                break
    sock.sendall(mp.macros(mp.SMFIC_BODYEOB, {"i": t.queue_id}) + mp.packet(mp.SMFIC_BODYEOB))
    answer = Answer(reply="", step="eom")
    while True:
        command, data = reader.read()
        if command in (mp.SMFIR_ADDHEADER, mp.SMFIR_INSHEADER):
            strings = _strings(data[4:] if command == mp.SMFIR_INSHEADER else data)
            answer.added.append((strings[0], _unfold(strings[1])))
        elif command == mp.SMFIR_CHGHEADER:
            index = int.from_bytes(data[:4], "big")
            name, value = _strings(data[4:])
            answer.changed.append((index, name, _unfold(value)))
        elif command == mp.SMFIR_QUARANTINE:
            answer.quarantined = True
        elif command == mp.SMFIR_PROGRESS or command in mp.MODIFICATIONS:
            continue
        elif command in REPLIES:
            final = _final(command, data, "eom")
            answer.reply, answer.smtp = final.reply, final.smtp
            return answer
        else:
            raise mp.MilterProtocolError(f"end of message: unexpected reply {command!r}")


def _final(command: bytes, data: bytes, step: str) -> Answer:
    smtp = data.rstrip(b"\0").decode("utf-8", "replace") if command == mp.SMFIR_REPLYCODE else ""
    return Answer(reply=REPLIES[command], step=step, smtp=smtp)
