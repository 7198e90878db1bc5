"""SMTP for end-to-end tests: a sink that keeps what an MTA relays, and a client.

Shared by the Postfix and Sendmail fixtures.  The sink accepts any envelope,
advertises PIPELINING, 8BITMIME and SMTPUTF8 so that no MTA converts a
message, and keeps each message exactly as it came over the wire.  The client
reports how a transaction ended instead of raising, so tests can assert on a
refusal.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import re
import smtplib
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

CLIENT_HELO = "client.example.test"
_MAX_LINE = 1_000_000
_PATH_ARG = re.compile(r"^(?:FROM|TO):\s*<([^>]*)>(.*)$", re.IGNORECASE | re.DOTALL)


class SmtpError(RuntimeError):
    """The sink was used after it was closed."""


SmtpStage = Literal["connect", "ehlo", "auth", "mail", "rcpt", "data", "message"]


@dataclass(frozen=True)
class SmtpReply:
    """What the server last said to :meth:`Postfix.send`.

    ``stage`` is the step that got this reply: ``connect``, ``ehlo``,
    ``auth``, ``mail``, ``rcpt``, ``data`` (the reply to DATA itself) or
    ``message`` (the reply to the message itself, where a 250 carries the
    queue id).  A connection that broke without a reply has ``code`` 0 and
    the error in ``text``.
    """

    code: int
    text: str
    stage: SmtpStage
    queue_id: str | None = None

    @property
    def accepted(self) -> bool:
        """True when the message was accepted (a 2xx reply to it)."""
        return self.stage == "message" and 200 <= self.code < 300

    @property
    def temporary(self) -> bool:
        """True for a 4xx reply."""
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        """True for a 5xx reply."""
        return 500 <= self.code < 600

    def __str__(self) -> str:
        queued = f" (queue id {self.queue_id})" if self.queue_id else ""
        return f"{self.code} {self.text} [at {self.stage}]{queued}"


def _reply(
    code: int, text: bytes | str, stage: SmtpStage, queue_id: re.Pattern[str] | None = None
) -> SmtpReply:
    decoded = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    found = None
    if stage == "message" and 200 <= code < 300 and queue_id is not None:
        match = queue_id.search(decoded)
        found = match.group(1) if match else None
    return SmtpReply(code, decoded, stage, found)


def crlf(message: bytes) -> bytes:
    """*message* with every line ending (CRLF, bare LF, bare CR) made CRLF."""
    return re.sub(rb"\r\n|\n|\r", b"\r\n", message)


# ---- the sink -------------------------------------------------------------------


@dataclass(frozen=True)
class SinkMessage:
    """One message the sink accepted, with its envelope.

    ``data`` is the message exactly as it came over the wire after
    dot-unstuffing, CRLF line ends included, without the final ``.`` line.
    """

    mail_from: str
    rcpt_to: tuple[str, ...]
    data: bytes
    helo: str
    peer: tuple[str, int]

    def header_values(self, name: str) -> list[str]:
        """The unfolded values of every header field called *name*."""
        return header_values(self.data, name)


def header_values(message: bytes, name: str) -> list[str]:
    """The unfolded values of the header fields *name* in *message* (any case)."""
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(message)
    values = parsed.get_all(name) or []
    return [re.sub(r"\r?\n[ \t]", " ", str(value)).strip() for value in values]


@dataclass
class _SinkState:
    messages: list[SinkMessage] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    condition: threading.Condition = field(default_factory=threading.Condition)


class _SinkServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: _SinkState) -> None:
        self.state = state
        super().__init__(address, _SinkHandler)


class _SinkHandler(socketserver.StreamRequestHandler):
    """One SMTP session: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT."""

    server: _SinkServer

    def setup(self) -> None:
        super().setup()
        # Postfix pipelines MAIL, RCPT and DATA; without TCP_NODELAY our
        # second small reply would wait for its delayed ACK (~40 ms).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def reply(self, *lines: str) -> None:
        text = "".join(
            f"{line[:3]}{'-' if i < len(lines) - 1 else ' '}{line[4:]}\r\n"
            for i, line in enumerate(lines)
        )
        self.wfile.write(text.encode())

    def handle(self) -> None:
        try:
            self._session()
        except (OSError, ValueError) as err:
            with self.server.state.condition:
                self.server.state.errors.append(f"{self.client_address}: {err!r}")

    def _session(self) -> None:
        helo = ""
        mail_from: str | None = None
        rcpt_to: list[str] = []
        self.reply("220 sink.example.test ESMTP test sink")
        while True:
            line = self.rfile.readline(_MAX_LINE)
            if not line:
                return
            command = line.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
            verb, _, arg = command.partition(" ")
            verb = verb.upper()
            if verb in ("EHLO", "HELO"):
                helo, mail_from, rcpt_to = arg.strip(), None, []
                if verb == "HELO":
                    self.reply("250 sink.example.test")
                else:
                    self.reply(
                        "250 sink.example.test",
                        "250 PIPELINING",
                        "250 8BITMIME",
                        "250 SMTPUTF8",
                        "250 SIZE 104857600",
                    )
            elif verb == "MAIL":
                match = _PATH_ARG.match(arg)
                if match is None or not match.group(0).upper().startswith("FROM"):
                    self.reply("501 5.5.4 syntax: MAIL FROM:<address>")
                elif mail_from is not None:
                    self.reply("503 5.5.1 nested MAIL command")
                else:
                    mail_from = match.group(1)
                    self.reply("250 2.1.0 ok")
            elif verb == "RCPT":
                match = _PATH_ARG.match(arg)
                if mail_from is None:
                    self.reply("503 5.5.1 need MAIL first")
                elif match is None or not match.group(0).upper().startswith("TO"):
                    self.reply("501 5.5.4 syntax: RCPT TO:<address>")
                else:
                    rcpt_to.append(match.group(1))
                    self.reply("250 2.1.5 ok")
            elif verb == "DATA":
                if mail_from is None or not rcpt_to:
                    self.reply("503 5.5.1 need MAIL and RCPT first")
                    continue
                self.reply("354 end data with <CR><LF>.<CR><LF>")
                data = self._read_data()
                if data is None:
                    return
                number = self._store(SinkMessage(mail_from, tuple(rcpt_to), data, helo, self._peer))
                self.reply(f"250 2.0.0 ok: stored as message {number}")
                mail_from, rcpt_to = None, []
            elif verb == "RSET":
                mail_from, rcpt_to = None, []
                self.reply("250 2.0.0 ok")
            elif verb == "NOOP":
                self.reply("250 2.0.0 ok")
            elif verb == "QUIT":
                self.reply("221 2.0.0 bye")
                return
            else:
                self.reply("502 5.5.2 command not implemented")

    @property
    def _peer(self) -> tuple[str, int]:
        host, port = self.client_address[:2]
        return (str(host), int(port))

    def _read_data(self) -> bytes | None:
        chunks: list[bytes] = []
        while True:
            line = self.rfile.readline(_MAX_LINE)
            if not line:
                return None  # the client went away mid-message: nothing is stored
            if line == b".\r\n":
                return b"".join(chunks)
            chunks.append(line[1:] if line.startswith(b".") else line)

    def _store(self, message: SinkMessage) -> int:
        state = self.server.state
        with state.condition:
            state.messages.append(message)
            state.condition.notify_all()
            return len(state.messages)


class SmtpSink:
    """An SMTP server on 127.0.0.1 that keeps every message it is given.

    It binds its port when made (``port``); :meth:`start` serves from a
    background thread, one thread per connection.  It accepts any envelope
    and advertises PIPELINING, 8BITMIME and SMTPUTF8 so that Postfix never
    converts a message.  Protocol errors of a session land in ``errors``.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._state = _SinkState()
        self._server = _SinkServer((host, 0), self._state)
        self.host = host
        self.port: int = self._server.server_address[1]
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def messages(self) -> list[SinkMessage]:
        """A copy of the messages received so far, oldest first."""
        with self._state.condition:
            return list(self._state.messages)

    @property
    def errors(self) -> list[str]:
        """Errors of sessions that broke (connection reset, overlong line)."""
        with self._state.condition:
            return list(self._state.errors)

    def start(self) -> None:
        """Serve in a background thread (again a no-op while serving)."""
        if self._closed:
            raise SmtpError("this SmtpSink is closed")
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"smtp-sink-{self.port}",
                daemon=True,
            )
            self._thread.start()

    def close(self) -> None:
        """Stop serving and close the listening socket."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def wait_for(self, match: Callable[[SinkMessage], bool], timeout: float) -> SinkMessage | None:
        """The first message for which *match* is true, waiting up to *timeout* s."""
        deadline = time.monotonic() + timeout
        with self._state.condition:
            while True:
                for message in self._state.messages:
                    if match(message):
                        return message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._state.condition.wait(remaining)


def send_message(
    port: int,
    message: bytes | str,
    *,
    mail_from: str,
    rcpt_to: Sequence[str],
    queue_id: re.Pattern[str] | None = None,
    source_address: str = "127.0.0.1",
    auth: tuple[str, str] | None = None,
    helo: str = CLIENT_HELO,
    timeout: float = 60.0,
) -> SmtpReply:
    """Send *message* to 127.0.0.1:*port* in one SMTP session; return the verdict.

    *queue_id* finds the MTA's queue id in its reply to the message.  The
    client binds *source_address*
    (any 127/8 address works on Linux), which is the address smtpd and
    the milter see.  Line ends are made CRLF; BODY=8BITMIME is given for
    8-bit data.  Nothing is raised for a refusal: the first reply that is
    not a success is returned, with the stage it answered; on success the
    reply after the data, with the queue id.  *auth* (user, password)
    logs in first (AUTH PLAIN); smtpd offers AUTH only when the instance
    was made with *sasl_users*, otherwise this fails at stage ``auth``.
    """
    data = crlf(message.encode() if isinstance(message, str) else message)
    options = ["BODY=8BITMIME"] if any(byte > 127 for byte in data) else []
    client = smtplib.SMTP(timeout=timeout, local_hostname=helo, source_address=(source_address, 0))
    stage: SmtpStage = "connect"
    try:
        code, text = client.connect("127.0.0.1", port)
        if code != 220:
            return _reply(code, text, stage)
        stage = "ehlo"
        code, text = client.ehlo()
        if code != 250:
            return _reply(code, text, stage)
        if auth is not None:
            stage = "auth"
            client.login(*auth)
        stage = "mail"
        code, text = client.mail(mail_from, options)
        if code != 250:
            return _reply(code, text, stage)
        stage = "rcpt"
        for recipient in rcpt_to:
            code, text = client.rcpt(recipient)
            if code not in (250, 251):
                return _reply(code, text, stage)
        stage = "data"
        code, text = client.data(data)
        return _reply(code, text, "message", queue_id)
    except smtplib.SMTPResponseException as err:
        return _reply(err.smtp_code, err.smtp_error, stage)
    except (smtplib.SMTPException, OSError) as err:
        return SmtpReply(0, f"{type(err).__name__}: {err}", stage)
    finally:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            client.quit()
        client.close()
