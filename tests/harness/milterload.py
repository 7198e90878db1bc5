"""Milter-protocol load driver: MTA-like sessions against one milter, no MTA in the loop.

Each of N workers loops: open a connection (one per SMTP session, as Postfix
does), negotiate version 6 offering every protocol option, then send one
message (or several, with SMFIC_ABORT between, as an MTA reusing a session):
macros, CONNECT, HELO, MAIL, RCPT, DATA, each header, EOH, the body in chunks
of at most 65535 bytes, and BODYEOB; then SMFIC_QUIT.  Steps the milter asked
to skip (SMFIP_NO*) are not sent, and replies it declared it will not send
(SMFIP_NR_*) are not waited for; packets that need no reply go out in one
write with the next one that does, as an MTA's buffered stream sends them.

Every end-of-message reply must carry an inserted (or added) DKIM-Signature
header and a final accept/continue; anything else is counted as a failure by
kind (no signature, tempfail, reject, early verdict, protocol error, timeout).
To measure verifying, ``message_file`` names a signed message sent as it is
(its Message-ID too), and ``require_pass`` wants an Authentication-Results
field saying ``dkim=pass`` instead (else ``not_pass``).
Latency is measured per message from the start of its session (connect, for
the first message of a connection) to the final reply, and separately from
BODYEOB sent to the final reply.  A sample of signed messages can be kept,
rebuilt as the MTA would write them, for an independent verifier.

Over TCP the driver sets TCP_NODELAY, and TCP_QUICKACK after each read
(both on by default, switchable): libmilter answers end of message in two
small writes, and without quick ACKs the second waits for the driver's
delayed ACK (about 40 ms on Linux).

Workers are threads; with ``processes`` > 1 they are spread over that many
processes so the GIL of one Python process is not the limit.

Command line, from ``tests/``:
``python -m harness.milterload --socket inet:8891@127.0.0.1 -c 4 -d 10``
(``--null`` starts :mod:`nullmilter` and measures the driver's own ceiling).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pickle
import random
import resource
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from harness import milterproto as mp
from harness.common import accepts, start_and_wait

TESTS_DIR = Path(__file__).resolve().parents[1]
"""The working directory of the harness's own processes (``python -m harness.NAME``): ``-m``
puts it first on their ``sys.path``, so they import ``harness`` as the tests do."""

SIGNATURE_HEADER = "DKIM-Signature"

FAILURE_KINDS = (
    "no_signature",
    "not_pass",
    "tempfail",
    "reject",
    "discard",
    "early_verdict",
    "protocol",
    "connect",
    "timeout",
    "error",
)


# -- the messages --------------------------------------------------------------------


@dataclass(frozen=True)
class TestMessage:
    """One message as the MTA has it: envelope, header fields, body (CRLF line ends)."""

    sender: str
    recipients: tuple[str, ...]
    headers: tuple[tuple[str, str], ...]
    body: bytes


def make_body(size: int) -> bytes:
    """A plain-text body of exactly ``size`` bytes, 78-byte CRLF lines of varied text."""
    words = (
        "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
        "incididunt ut labore et dolore magna aliqua ut enim ad minim veniam quis nostrud"
    ).split()
    lines: list[bytes] = []
    total = 0
    for n in itertools.count():
        line = " ".join(words[(n + i) % len(words)] for i in range(12))[:76].encode() + b"\r\n"
        lines.append(line)
        total += len(line)
        if total >= size:
            break
    body = b"".join(lines)[:size]
    if size >= 2 and not body.endswith(b"\r\n"):
        body = body[:-2] + b"\r\n"
    return body


def make_message(domain: str, body_size: int) -> TestMessage:
    """The benchmark message: seven ordinary header fields and a text body.

    Message-ID is rewritten per message by the worker (it carries the queue id).
    """
    sender = f"alice@{domain}"
    headers = (
        ("From", f"Alice Example <{sender}>"),
        ("To", "Bob Example <bob@example.net>"),
        ("Subject", f"milterload {body_size}-byte body"),
        ("Date", "Sat, 28 Nov 2026 12:00:00 +0000"),
        ("Message-ID", "<placeholder@bench>"),
        ("MIME-Version", "1.0"),
        ("Content-Type", "text/plain; charset=us-ascii"),
    )
    return TestMessage(sender, ("bob@example.net",), headers, make_body(body_size))


def read_message(path: str, sender: str, recipient: str = "bob@example.net") -> TestMessage:
    """The message in ``path`` (as written, CRLF or LF line ends), to send as it is."""
    data = Path(path).read_bytes().replace(b"\r\n", b"\n")
    head, _, body = data.partition(b"\n\n")
    headers: list[tuple[str, str]] = []
    for line in head.decode("utf-8", "surrogateescape").split("\n"):
        if line[:1] in (" ", "\t") and headers:  # a folded line: LF inside the value
            name, value = headers[-1]
            headers[-1] = (name, value + "\n" + line)
        else:
            name, _, value = line.partition(":")
            headers.append((name, value.removeprefix(" ")))
    return TestMessage(sender, (recipient,), tuple(headers), body.replace(b"\n", b"\r\n"))


def with_domain(message: TestMessage, domain: str) -> TestMessage:
    """``message`` sent from ``alice@domain`` instead (envelope sender and From)."""
    sender = f"alice@{domain}"
    headers = tuple(
        ("From", f"Alice Example <{sender}>") if name == "From" else (name, value)
        for name, value in message.headers
    )
    return replace(message, sender=sender, headers=headers)


def read_domains(path: str) -> list[str]:
    """The From domains in ``path``: one a line; blank lines and ``#`` comments skipped."""
    with open(path, encoding="utf-8") as stream:
        domains = [line.strip() for line in stream]
    domains = [d for d in domains if d and not d.startswith("#")]
    if not domains:
        raise ValueError(f"{path} lists no domains")
    return domains


# -- options and results -------------------------------------------------------------


@dataclass
class LoadOptions:
    """What to send, how hard, and how to behave on the socket."""

    socket: str
    concurrency: int = 1
    count: int | None = None
    """Total messages (all workers); None: run for ``duration``."""
    duration: float | None = None
    messages_per_connection: int = 1
    body_size: int = 2048
    domain: str = "example.com"
    domains_file: str | None = None
    """A file of From domains, one a line: each message picks one at random."""
    quickack: bool = True
    nodelay: bool = True
    auth_authen: str | None = None
    daemon_name: str = "bench-mta"
    hostname: str = "mta.bench.test"
    client_address: str = "127.0.0.1"
    timeout: float = 30.0
    sample: int = 0
    """Keep this many signed messages (rebuilt as the MTA would write them)."""
    processes: int = 1
    require_signature: bool = True
    message_file: str | None = None
    """Send this message (a file) as it is, instead of a generated one of ``body_size``."""
    require_pass: bool = False
    """Want an Authentication-Results field with ``dkim=pass``, not a DKIM-Signature."""


@dataclass
class LoadResult:
    """What one run measured; merged across processes."""

    messages: int = 0
    ok: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    total_latency: list[float] = field(default_factory=list)
    eom_latency: list[float] = field(default_factory=list)
    start: float = 0.0
    end: float = 0.0
    driver_cpu: float = 0.0
    """CPU seconds (user+system) the driver itself used."""
    connections: int = 0
    negotiated: dict[str, Any] = field(default_factory=dict)
    samples: list[bytes] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    """The first few error texts, for diagnosis."""

    @property
    def elapsed(self) -> float:
        return max(self.end - self.start, 1e-9)

    @property
    def rate(self) -> float:
        """Messages answered per second, over the whole run."""
        return self.messages / self.elapsed

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def merge(self, other: LoadResult) -> None:
        self.messages += other.messages
        self.ok += other.ok
        for kind, n in other.failures.items():
            self.failures[kind] = self.failures.get(kind, 0) + n
        self.total_latency += other.total_latency
        self.eom_latency += other.eom_latency
        self.start = min(self.start, other.start) if self.start else other.start
        self.end = max(self.end, other.end)
        self.driver_cpu += other.driver_cpu
        self.connections += other.connections
        self.negotiated = self.negotiated or other.negotiated
        self.samples += other.samples
        self.errors += other.errors[: max(0, 10 - len(self.errors))]

    def summary(self) -> dict[str, Any]:
        """Numbers for JSON and tables (latencies in milliseconds)."""
        total = sorted(self.total_latency)
        eom = sorted(self.eom_latency)
        return {
            "messages": self.messages,
            "ok": self.ok,
            "failures": dict(self.failures),
            "elapsed_s": round(self.elapsed, 3),
            "msg_per_s": round(self.rate, 1),
            "latency_ms": {
                "p50": round(percentile(total, 50) * 1000, 3),
                "p90": round(percentile(total, 90) * 1000, 3),
                "p99": round(percentile(total, 99) * 1000, 3),
                "max": round(total[-1] * 1000, 3) if total else 0.0,
            },
            "eom_latency_ms": {
                "p50": round(percentile(eom, 50) * 1000, 3),
                "p99": round(percentile(eom, 99) * 1000, 3),
            },
            "driver_cpu_ms_per_msg": round(1000 * self.driver_cpu / max(self.messages, 1), 4),
            "connections": self.connections,
            "negotiated": self.negotiated,
            "errors": self.errors,
        }


def percentile(ordered: Sequence[float], q: float) -> float:
    """The q-th percentile of sorted values, interpolated linearly (0 for none)."""
    if not ordered:
        return 0.0
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# -- one session ---------------------------------------------------------------------


class MessageFailed(Exception):
    """The message ended without a usable signature; ``kind`` is one of FAILURE_KINDS."""

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(text)
        self.kind = kind


@dataclass
class Negotiated:
    version: int
    actions: int
    protocol: int

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "actions": f"0x{self.actions:x}",
            "protocol": f"0x{self.protocol:x}",
            "protocol_names": mp.protocol_names(self.protocol),
        }


@dataclass
class Session:
    """One milter connection: the socket, its reader, what was negotiated."""

    sock: socket.socket
    reader: mp.PacketReader
    negotiated: Negotiated

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self, *, polite: bool) -> None:
        try:
            if polite:
                self.sock.sendall(mp.packet(mp.SMFIC_QUIT))
        except OSError:
            pass
        finally:
            self.sock.close()


def open_session(address: mp.MilterAddress, options: LoadOptions) -> Session:
    """Connect and negotiate; the milter's answer decides which steps follow."""
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        sock.settimeout(options.timeout)
        try:
            sock.connect(address.sockaddr)
        except OSError as err:
            raise MessageFailed("connect", f"connect to {address}: {err}") from None
        sock.settimeout(None)
        # Kernel-side timeouts: no poll() before every recv as socket.settimeout adds.
        seconds = int(options.timeout)
        timeval = struct.pack("ll", seconds, int((options.timeout - seconds) * 1e6))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        if address.is_tcp and options.nodelay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = mp.PacketReader(sock, quickack=options.quickack)
        sock.sendall(mp.optneg(mp.MILTER_VERSION, mp.ALL_ACTIONS, mp.ALL_PROTOCOL))
        command, data = reader.read()
        if command != mp.SMFIC_OPTNEG:
            raise MessageFailed("protocol", f"negotiation answered with {command!r}")
        version, actions, protocol = mp.parse_optneg(data)
        return Session(sock, reader, Negotiated(version, actions, protocol))
    except BaseException:
        sock.close()
        raise


@dataclass
class Outcome:
    """The end-of-message answer: the modifications and the final reply."""

    modifications: list[tuple[bytes, bytes]]
    final: bytes
    final_data: bytes
    eom_sent: float
    """perf_counter() when BODYEOB was written."""


def _check_step_reply(session: Session, step: str, *, body: bool = False) -> bool:
    """Read the reply to a step; True to go on, False when the milter said SKIP (body only)."""
    while True:
        command, data = session.reader.read()
        if command == mp.SMFIR_CONTINUE:
            return True
        if command == mp.SMFIR_PROGRESS:
            continue
        if command == mp.SMFIR_SKIP and body:
            return False
        if command in mp.FINAL_REPLIES:
            text = data.rstrip(b"\0").decode("ascii", "replace")
            raise MessageFailed("early_verdict", f"{step}: {command.decode()} {text}".rstrip())
        raise MessageFailed("protocol", f"{step}: unexpected reply {command!r}")


class MessagePlan:
    """Everything about a message that does not change between sends, as packets."""

    def __init__(self, message: TestMessage, negotiated: Negotiated, options: LoadOptions) -> None:
        p = negotiated.protocol
        self.protocol = p
        self.leadspc = bool(p & mp.SMFIP_HDR_LEADSPC)
        self.message = message
        self.options = options
        self.fixed = options.message_file is not None
        """The message goes as it is: its Message-ID is not rewritten per message."""
        sep = " " if self.leadspc else ""
        self.header_packets: list[tuple[str, bytes]] = [
            (name, mp.packet(mp.SMFIC_HEADER, mp.nul_strings(name, sep + value)))
            for name, value in message.headers
        ]
        self.wire_headers = [(name, sep + value) for name, value in message.headers]
        chunks = [
            message.body[i : i + mp.MILTER_CHUNK_SIZE]
            for i in range(0, len(message.body), mp.MILTER_CHUNK_SIZE)
        ]
        self.body_packets = [mp.packet(mp.SMFIC_BODY, chunk) for chunk in chunks]
        family = mp.SMFIA_INET6 if ":" in options.client_address else mp.SMFIA_INET
        self.connect_packet = mp.macros(
            mp.SMFIC_CONNECT,
            {
                "j": options.hostname,
                "{daemon_name}": options.daemon_name,
                "{client_addr}": options.client_address,
                "{client_name}": "localhost",
            },
        ) + mp.connect_info("localhost", family, 40000, options.client_address)
        self.helo_packet = mp.packet(mp.SMFIC_HELO, mp.nul_strings("client.bench.test"))
        self.rcpt_packets = [
            mp.macros(mp.SMFIC_RCPT, {"{rcpt_addr}": r})
            + mp.packet(mp.SMFIC_RCPT, mp.nul_strings(f"<{r}>"))
            for r in message.recipients
        ]


def send_message(session: Session, plan: MessagePlan, queue_id: str, first: bool) -> Outcome:
    """One transaction, from CONNECT (first message) or MAIL to the final reply.

    Packets that get no reply are held and written with the next one that does.
    """
    p = plan.protocol
    pending: list[bytes] = []

    def step(data: bytes, no_reply: int, name: str) -> None:
        pending.append(data)
        if p & no_reply:
            return
        session.send(b"".join(pending))
        pending.clear()
        _check_step_reply(session, name)

    if first and not p & mp.SMFIP_NOCONNECT:
        step(plan.connect_packet, mp.SMFIP_NR_CONN, "connect")
    if first and not p & mp.SMFIP_NOHELO:
        step(plan.helo_packet, mp.SMFIP_NR_HELO, "helo")
    if not p & mp.SMFIP_NOMAIL:
        mail_macros = {"i": queue_id, "{mail_addr}": plan.message.sender}
        if plan.options.auth_authen:
            mail_macros["{auth_type}"] = "PLAIN"
            mail_macros["{auth_authen}"] = plan.options.auth_authen
        data = mp.macros(mp.SMFIC_MAIL, mail_macros) + mp.packet(
            mp.SMFIC_MAIL, mp.nul_strings(f"<{plan.message.sender}>")
        )
        step(data, mp.SMFIP_NR_MAIL, "mail")
    if not p & mp.SMFIP_NORCPT:
        for rcpt in plan.rcpt_packets:
            step(rcpt, mp.SMFIP_NR_RCPT, "rcpt")
    if not p & mp.SMFIP_NODATA:
        data = mp.macros(mp.SMFIC_DATA, {"i": queue_id}) + mp.packet(mp.SMFIC_DATA)
        step(data, mp.SMFIP_NR_DATA, "data")
    if not p & mp.SMFIP_NOHDRS:
        message_id = message_id_packet(plan, queue_id)
        for name, header in plan.header_packets:
            own = name == "Message-ID" and not plan.fixed
            step(message_id if own else header, mp.SMFIP_NR_HDR, "header")
    if not p & mp.SMFIP_NOEOH:
        data = mp.macros(mp.SMFIC_EOH, {"i": queue_id}) + mp.packet(mp.SMFIC_EOH)
        step(data, mp.SMFIP_NR_EOH, "eoh")
    if not p & mp.SMFIP_NOBODY:
        for chunk in plan.body_packets:
            pending.append(chunk)
            if p & mp.SMFIP_NR_BODY:
                continue
            session.send(b"".join(pending))
            pending.clear()
            if not _check_step_reply(session, "body", body=True):
                break
    pending.append(mp.macros(mp.SMFIC_BODYEOB, {"i": queue_id}) + mp.packet(mp.SMFIC_BODYEOB))
    session.send(b"".join(pending))
    eom_sent = time.perf_counter()
    modifications: list[tuple[bytes, bytes]] = []
    while True:
        command, data = session.reader.read()
        if command in mp.MODIFICATIONS:
            modifications.append((command, data))
        elif command == mp.SMFIR_PROGRESS:
            continue
        elif command in mp.FINAL_REPLIES:
            return Outcome(modifications, command, data, eom_sent)
        else:
            raise MessageFailed("protocol", f"end of message: unexpected reply {command!r}")


def message_id_value(plan: MessagePlan, queue_id: str) -> str:
    return f"<{queue_id}@{plan.options.domain}>"


def message_id_packet(plan: MessagePlan, queue_id: str) -> bytes:
    sep = " " if plan.leadspc else ""
    value = sep + message_id_value(plan, queue_id)
    return mp.packet(mp.SMFIC_HEADER, mp.nul_strings("Message-ID", value))


def judge(outcome: Outcome, require_signature: bool, require_pass: bool = False) -> None:
    """Raise MessageFailed unless the message was accepted with a DKIM-Signature inserted
    (or, ``require_pass``, with an Authentication-Results field saying dkim=pass)."""
    final = outcome.final
    text = outcome.final_data.rstrip(b"\0").decode("ascii", "replace")
    if final == mp.SMFIR_TEMPFAIL or (final == mp.SMFIR_REPLYCODE and text.startswith("4")):
        raise MessageFailed("tempfail", f"end of message: tempfail {text}".rstrip())
    if final == mp.SMFIR_REJECT or final == mp.SMFIR_REPLYCODE:
        raise MessageFailed("reject", f"end of message: reject {text}".rstrip())
    if final == mp.SMFIR_DISCARD:
        raise MessageFailed("discard", "end of message: discard")
    if require_signature and not any(
        _header_name(command, data).lower() == SIGNATURE_HEADER.lower()
        for command, data in outcome.modifications
        if command in (mp.SMFIR_INSHEADER, mp.SMFIR_ADDHEADER)
    ):
        raise MessageFailed("no_signature", "end of message: accepted without DKIM-Signature")
    if require_pass and not any(
        _header_name(command, data).lower() == "authentication-results" and b"dkim=pass" in data
        for command, data in outcome.modifications
        if command in (mp.SMFIR_INSHEADER, mp.SMFIR_ADDHEADER)
    ):
        raise MessageFailed("not_pass", "end of message: no Authentication-Results dkim=pass")


def _header_name(command: bytes, data: bytes) -> str:
    start = 4 if command in (mp.SMFIR_INSHEADER, mp.SMFIR_CHGHEADER) else 0
    return data[start:].split(b"\0", 1)[0].decode("ascii", "replace")


def rebuild(plan: MessagePlan, queue_id: str, outcome: Outcome) -> bytes:
    """The message as the MTA would write it after the milter's header changes."""
    headers = [
        (
            name,
            message_id_value(plan, queue_id) if name == "Message-ID" and not plan.fixed else value,
        )
        for name, value in plan.message.headers
    ]
    sep = " " if plan.leadspc else ""
    fields: list[tuple[str, str]] = [(n, sep + v) for n, v in headers]
    for command, data in outcome.modifications:
        if command == mp.SMFIR_INSHEADER:
            (index,) = struct.unpack_from("!I", data)
            name, value = _strings(data[4:])
            fields.insert(min(index, len(fields)), (name, value))
        elif command == mp.SMFIR_ADDHEADER:
            name, value = _strings(data)
            fields.append((name, value))
        elif command == mp.SMFIR_CHGHEADER:
            (index,) = struct.unpack_from("!I", data)
            name, value = _strings(data[4:])
            seen = 0
            for position, (existing, _) in enumerate(fields):
                if existing.lower() == name.lower():
                    seen += 1
                    if seen == max(index, 1):
                        if value:
                            fields[position] = (existing, value)
                        else:
                            del fields[position]
                        break
    lines = []
    for name, value in fields:
        text = value if plan.leadspc else " " + value
        text = text.replace("\r\n", "\n").replace("\n", "\r\n")
        lines.append(f"{name}:{text}\r\n")
    return "".join(lines).encode() + b"\r\n" + plan.message.body


def _strings(data: bytes) -> tuple[str, str]:
    parts = data.split(b"\0")
    if len(parts) < 2:
        raise MessageFailed("protocol", "header modification without name and value")
    return parts[0].decode("utf-8", "replace"), parts[1].decode("utf-8", "replace")


# -- workers -------------------------------------------------------------------------


class _Shared:
    """State the threads of one process share."""

    def __init__(self, options: LoadOptions, count: int | None, deadline: float | None) -> None:
        self.options = options
        self.count = count
        self.deadline = deadline
        self.claimed = itertools.count()
        self.lock = threading.Lock()
        self.result = LoadResult()
        self.sample_room = options.sample

    def claim(self) -> bool:
        """True while there is another message to send."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return False
        return self.count is None or next(self.claimed) < self.count


def _worker(
    shared: _Shared, number: int, message: TestMessage, domains: Sequence[str] = ()
) -> None:
    options = shared.options
    address = mp.MilterAddress.parse(options.socket)
    total_latency: list[float] = []
    eom_latency: list[float] = []
    failures: Counter[str] = Counter()
    errors: list[str] = []
    ok = messages = connections = 0
    plans: dict[int, MessagePlan] = {}
    negotiated: Negotiated | None = None
    sequence = 0
    prefix = f"{os.getpid():X}{number:02X}"
    clock = time.perf_counter
    pick = random.Random(prefix).choice
    while shared.claim():
        started = clock()
        try:
            session = open_session(address, options)
        except (MessageFailed, OSError, mp.MilterProtocolError) as err:
            messages += 1
            failures[_kind_of(err)] += 1
            if len(errors) < 5:
                errors.append(_describe(err, options))
            time.sleep(0.01)
            continue
        connections += 1
        negotiated = session.negotiated
        plan = plans.get(negotiated.protocol)
        if plan is None:
            plan = plans[negotiated.protocol] = MessagePlan(message, negotiated, options)
        polite = True
        for index in range(options.messages_per_connection):
            if index > 0:
                if not shared.claim():
                    break
                started = clock()
            sequence += 1
            queue_id = f"{prefix}{sequence:06X}"
            messages += 1
            if domains:  # a fresh plan per message, for its own From domain
                plan = MessagePlan(with_domain(message, pick(domains)), negotiated, options)
            try:
                if index > 0:
                    # The previous transaction is over; reset the milter's message state.
                    session.send(mp.packet(mp.SMFIC_ABORT))
                outcome = send_message(session, plan, queue_id, first=index == 0)
                eom_done = clock()
                judge(outcome, options.require_signature, options.require_pass)
            except Exception as err:  # counted by kind; the run goes on
                failures[_kind_of(err)] += 1
                if len(errors) < 5:
                    errors.append(f"{queue_id}: {_describe(err, options)}")
                if not isinstance(err, MessageFailed) or err.kind in ("protocol", "timeout"):
                    polite = False
                    break
                continue
            ok += 1
            total_latency.append(eom_done - started)
            eom_latency.append(eom_done - outcome.eom_sent)
            if shared.sample_room > 0:
                with shared.lock:
                    if shared.sample_room > 0:
                        shared.sample_room -= 1
                        shared.result.samples.append(rebuild(plan, queue_id, outcome))
        session.close(polite=polite)
    with shared.lock:
        result = shared.result
        result.messages += messages
        result.ok += ok
        for kind, n in failures.items():
            result.failures[kind] = result.failures.get(kind, 0) + n
        result.total_latency += total_latency
        result.eom_latency += eom_latency
        result.connections += connections
        result.errors += errors[: max(0, 10 - len(result.errors))]
        if negotiated is not None and not result.negotiated:
            result.negotiated = negotiated.describe()


def _describe(err: BaseException, options: LoadOptions) -> str:
    if isinstance(err, (BlockingIOError, TimeoutError)):
        return f"no answer from the milter within {options.timeout:g} s"
    return str(err) or type(err).__name__


def _kind_of(err: BaseException) -> str:
    if isinstance(err, MessageFailed):
        return err.kind
    if isinstance(err, (BlockingIOError, TimeoutError)):
        return "timeout"
    if isinstance(err, mp.MilterProtocolError):
        return "protocol"
    return "error"


def run_threads(
    options: LoadOptions,
    concurrency: int,
    count: int | None,
    ready: Callable[[], None] | None = None,
) -> LoadResult:
    """Run ``concurrency`` worker threads in this process until ``count`` or the duration."""
    message = (
        read_message(options.message_file, f"alice@{options.domain}")
        if options.message_file
        else make_message(options.domain, options.body_size)
    )
    domains = read_domains(options.domains_file) if options.domains_file else []
    shared = _Shared(options, count, None)
    gate = threading.Barrier(concurrency + 1)

    def body(number: int) -> None:
        gate.wait()
        _worker(shared, number, message, domains)

    threads = [
        threading.Thread(target=body, args=(n,), name=f"milterload-{n}", daemon=True)
        for n in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    if ready is not None:
        ready()
    cpu_before = _cpu_seconds()
    shared.result.start = time.monotonic()
    if options.duration is not None:
        shared.deadline = shared.result.start + options.duration
    gate.wait()
    for thread in threads:
        thread.join()
    shared.result.end = time.monotonic()
    shared.result.driver_cpu = _cpu_seconds() - cpu_before
    return shared.result


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _worker_process_main() -> int:
    """``python -m harness.milterload --worker``: options as JSON on stdin, ready, go, result.

    The result goes to standard output as a pickle after the ``ready`` line.
    """
    spec = json.loads(sys.stdin.readline())
    options = LoadOptions(**spec["options"])

    def ready() -> None:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        if sys.stdin.readline().strip() != "go":
            raise SystemExit("milterload worker: no go from the parent")

    result = run_threads(options, spec["concurrency"], spec["count"], ready=ready)
    sys.stdout.buffer.write(pickle.dumps(asdict(result)))  # plain types only
    sys.stdout.flush()
    return 0


def run_load(options: LoadOptions) -> LoadResult:
    """Run the load described by ``options`` and return the merged measurements.

    With ``processes`` > 1 each process is a fresh ``python -m
    harness.milterload --worker``; all of them start sending at the same moment.
    """
    if (options.count is None) == (options.duration is None):
        raise ValueError("give exactly one of count and duration")
    processes = max(1, min(options.processes, options.concurrency))
    if processes == 1:
        return run_threads(options, options.concurrency, options.count)
    children: list[subprocess.Popen[bytes]] = []
    try:
        for index in range(processes):
            workers = options.concurrency // processes + (
                1 if index < options.concurrency % processes else 0
            )
            count = None
            if options.count is not None:
                count = options.count // processes + (1 if index < options.count % processes else 0)
            share = {**asdict(options), "sample": options.sample if index == 0 else 0}
            child = subprocess.Popen(
                [sys.executable, "-m", "harness.milterload", "--worker"],
                cwd=TESTS_DIR,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            assert child.stdin is not None
            spec = {"options": share, "concurrency": workers, "count": count}
            child.stdin.write(json.dumps(spec).encode() + b"\n")
            child.stdin.flush()
            children.append(child)
        for child in children:
            assert child.stdout is not None
            if child.stdout.readline() != b"ready\n":
                raise RuntimeError(f"load process {child.pid} did not start")
        for child in children:
            assert child.stdin is not None
            child.stdin.write(b"go\n")
            child.stdin.close()
        merged = LoadResult()
        for child in children:
            assert child.stdout is not None
            data = child.stdout.read()
            if child.wait() != 0 or not data:
                raise RuntimeError(f"load process {child.pid} exited with {child.returncode}")
            merged.merge(LoadResult(**pickle.loads(data)))  # noqa: S301 - our own child's output
        return merged
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


# -- the null milter, for the driver's ceiling ---------------------------------------


def start_null_milter(
    *args: str, unix_dir: Path | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """Start harness/nullmilter.py on a free loopback port (or a Unix socket in ``unix_dir``);
    return it and its socket spec."""
    if unix_dir is not None:
        spec = f"unix:{unix_dir / 'nullmilter.sock'}"
    else:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            spec = f"inet:{probe.getsockname()[1]}@127.0.0.1"
    process = start_and_wait(
        [sys.executable, "-m", "harness.nullmilter", "--socket", spec, *args],
        name="nullmilter.py",
        until=f"listening on {spec}",
        ready=lambda: accepts(spec),
        timeout=10,
        cwd=TESTS_DIR,
    )
    return process, spec


# -- command line --------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--socket", help="milter socket: inet:PORT@HOST or unix:PATH")
    target.add_argument(
        "--null", action="store_true", help="start harness/nullmilter.py and measure the driver"
    )
    parser.add_argument(
        "--null-split-eom",
        action="store_true",
        help="with --null: two writes at end of message, Nagle on (as libmilter)",
    )
    parser.add_argument("-c", "--concurrency", type=int, default=1)
    parser.add_argument("-n", "--count", type=int, help="messages in all")
    parser.add_argument("-d", "--duration", type=float, help="seconds to run (default 10)")
    parser.add_argument("--size", type=int, default=2048, help="body bytes (default 2048)")
    parser.add_argument("--domain", default="example.com", help="From domain")
    parser.add_argument(
        "--domains-file",
        type=Path,
        help="file of From domains, one a line; each message picks one at random",
    )
    parser.add_argument("--per-connection", type=int, default=1, help="messages per connection")
    parser.add_argument("--no-quickack", action="store_true", help="leave delayed ACKs on")
    parser.add_argument("--no-nodelay", action="store_true", help="leave Nagle on")
    parser.add_argument("--auth", help="send {auth_authen} with this user name")
    parser.add_argument("--processes", type=int, default=1, help="driver processes")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--no-require-signature", action="store_true")
    parser.add_argument("--sample", type=int, default=0, help="signed messages to keep")
    parser.add_argument("--sample-dir", type=Path, help="write kept messages here as .eml")
    parser.add_argument("--json", type=Path, help="write the summary here")
    args = parser.parse_args(argv)
    if args.count is None and args.duration is None:
        args.duration = 10.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and sys.argv[1:] == ["--worker"]:
        return _worker_process_main()
    args = _parse_args(argv)
    null = None
    spec = args.socket
    if args.null:
        null, spec = start_null_milter(*(["--split-eom"] if args.null_split_eom else []))
    options = LoadOptions(
        socket=spec,
        concurrency=args.concurrency,
        count=args.count,
        duration=args.duration if args.count is None else None,
        messages_per_connection=args.per_connection,
        body_size=args.size,
        domain=args.domain,
        domains_file=str(args.domains_file) if args.domains_file else None,
        quickack=not args.no_quickack,
        nodelay=not args.no_nodelay,
        auth_authen=args.auth,
        timeout=args.timeout,
        sample=args.sample,
        processes=args.processes,
        require_signature=not args.no_require_signature,
    )
    try:
        result = run_load(options)
    finally:
        if null is not None:
            null.terminate()
            null.wait()
    summary = result.summary()
    print(json.dumps(summary, indent=2))
    if args.sample_dir is not None:
        args.sample_dir.mkdir(parents=True, exist_ok=True)
        for n, sample in enumerate(result.samples):
            (args.sample_dir / f"signed-{n:03d}.eml").write_bytes(sample)
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if result.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
