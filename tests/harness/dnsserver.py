"""A small authoritative DNS server on loopback that serves DKIM key records to tests.

End-to-end tests need verifiers that are not dkimpy (Perl Mail::DKIM, OpenDKIM)
to fetch public keys the way they would on the Internet: with real DNS queries
(RFC 6376 section 3.6.2). ``DnsServer`` answers TXT queries from an in-memory
table on 127.0.0.1, UDP and TCP (RFC 1035 section 4.2, RFC 7766), on a port the
kernel picks, from one background thread.

Behaviour, all of which tests rely on:

* Names are case-insensitive (RFC 4343) and the trailing dot is optional.
* A name with TXT data answers NOERROR with the TXT records, authoritative.
  Each text given is one TXT record; texts longer than 255 bytes are split
  into 255-byte character-strings (RFC 7208 section 3.3 describes the same
  convention; RFC 6376 section 3.6.2.2 has verifiers concatenate them).
* A name that exists (or is a parent of one that does) but has no data of the
  queried type answers NOERROR with an empty answer (NODATA, RFC 2308).
* Any other name answers NXDOMAIN. Negative answers carry an SOA for the root
  zone with TTL 0 so that caching resolvers in front of us keep nothing.
* ``set_timeout(name)`` makes the server swallow queries for that name, and
  ``set_servfail(name)`` makes it answer SERVFAIL (RFC 6376 section 6.1.2,
  TEMPFAIL).
* A UDP answer larger than the client can take (512 bytes, or its EDNS0
  payload size, RFC 6891) is sent truncated with TC set, so the client
  retries over TCP.
* Every query name is appended to ``queries`` (lowercase, no trailing dot).
* An exception while answering is appended to ``errors`` (a traceback) and
  the query answered SERVFAIL; tests may assert ``errors == []``.

Example::

    with DnsServer({"s1._domainkey.example.com": ["v=DKIM1; k=rsa; p=..."]}) as dns:
        run_verifier(port=dns.port)
        assert dns.queries == ["s1._domainkey.example.com"]
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset

__all__ = ["DnsServer", "parse_zone_lines"]

# Answers carry TTL 0: tests change records between queries, and a caching
# resolver in front of us (unbound inside OpenDKIM) must not keep stale data.
_TTL = 0
_MAX_CHARACTER_STRING = 255
_UDP_DEFAULT_PAYLOAD = 512  # RFC 1035 section 4.2.1, without EDNS0


@dataclass
class _Entry:
    """What the server knows about one owner name."""

    txt: list[bytes] = field(default_factory=list)
    timeout: bool = False
    servfail: bool = False


def _name(text: str) -> dns.name.Name:
    """Absolute form of ``text``; ``dns.name.Name`` compares case-insensitively."""
    return dns.name.from_text(text.strip(), origin=dns.name.root)


def _split_character_strings(data: bytes) -> list[bytes]:
    """Split one TXT record's data into character-strings of at most 255 bytes."""
    if not data:
        return [b""]
    return [data[i : i + _MAX_CHARACTER_STRING] for i in range(0, len(data), _MAX_CHARACTER_STRING)]


class DnsServer:
    """Authoritative TXT server on 127.0.0.1 (UDP and TCP, same port) for tests.

    Args:
        records: initial table, owner name -> TXT texts (one record per text).
        host, port: where to listen (default: a free port on 127.0.0.1); a verifier that
            takes no port (OpenDKIM's ``Nameservers``) needs port 53.
        ttl: the TTL of TXT answers (default 0, see ``_TTL``); a benchmark gives keys a
            real one, so that verifiers cache them as in production.
    """

    def __init__(
        self,
        records: Mapping[str, Sequence[str]] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ttl: int = _TTL,
    ) -> None:
        self.host = host
        self.ttl = ttl
        self._wanted_port = port
        self._lock = threading.Lock()
        self._entries: dict[dns.name.Name, _Entry] = {}
        self.queries: list[str] = []
        self.errors: list[str] = []
        self.port: int = 0
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._stopping = threading.Event()
        for name, texts in (records or {}).items():
            self.set_txt(name, *texts)

    # -- table ------------------------------------------------------------

    def set_txt(self, name: str, *texts: str) -> None:
        """Publish ``texts`` as the TXT records of ``name``, replacing what was there.

        Also clears any failure mode set for ``name``. With no texts the name
        exists but has no TXT data (NODATA).
        """
        entry = _Entry(txt=[text.encode("utf-8") for text in texts])
        with self._lock:
            self._entries[_name(name)] = entry

    def remove(self, name: str) -> None:
        """Forget ``name`` (records and failure modes); it answers NXDOMAIN again."""
        with self._lock:
            self._entries.pop(_name(name), None)

    def set_timeout(self, name: str) -> None:
        """Never answer queries for ``name``, over UDP or TCP."""
        with self._lock:
            self._entries.setdefault(_name(name), _Entry()).timeout = True

    def set_servfail(self, name: str) -> None:
        """Answer SERVFAIL to queries for ``name``."""
        with self._lock:
            self._entries.setdefault(_name(name), _Entry()).servfail = True

    def load_zone_lines(self, text: str, origin: str | None = None) -> list[str]:
        """Publish the TXT records in zone-file text (RFC 1035 section 5.1).

        Accepts what ``ldapdkim dns-records`` and ``opendkim-genkey`` print, one
        record per line or a parenthesised record over several lines::

            s1._domainkey.example.com. 3600 IN TXT "v=DKIM1; k=ed25519; " "p=..."
            s2._domainkey.example.com. IN TXT ( "v=DKIM1; k=rsa; "
                "p=MIIB..." )  ; comment

        The quoted strings of a record are joined into one text. Records for
        one name accumulate; each name found replaces that name's previous
        records. Relative names get ``origin`` (or ``$ORIGIN``) appended; with
        neither, every name is taken as absolute.

        Returns:
            The owner names loaded, lowercase without the trailing dot, in order.

        Raises:
            ValueError: a line is not a TXT record, or the text is malformed.
        """
        loaded: dict[dns.name.Name, list[str]] = {}
        for owner, value in parse_zone_lines(text, origin):
            loaded.setdefault(_name(owner), []).append(value)
        for owner_name, values in loaded.items():
            self.set_txt(owner_name.to_text(), *values)
        return [_text_of(owner_name) for owner_name in loaded]

    def records(self) -> dict[str, list[str]]:
        """A copy of the published TXT table (names lowercase, no trailing dot)."""
        with self._lock:
            return {
                _text_of(name): [data.decode("utf-8", "replace") for data in entry.txt]
                for name, entry in self._entries.items()
                if entry.txt
            }

    # -- lifecycle --------------------------------------------------------

    def start(self) -> None:
        """Bind UDP and TCP on one free loopback port and start serving."""
        if self._thread is not None:
            raise RuntimeError("DnsServer already started")
        # The kernel picks a free TCP port; UDP takes the same number. Another
        # process may hold that UDP port, so try a few times.
        last_error: OSError | None = None
        for _attempt in range(20):
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((self.host, self._wanted_port))
            port = tcp.getsockname()[1]
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                udp.bind((self.host, port))
            except OSError as err:
                last_error = err
                tcp.close()
                udp.close()
                continue
            tcp.listen(16)
            self._tcp, self._udp, self.port = tcp, udp, port
            break
        else:
            raise RuntimeError(
                "DnsServer: no loopback port free for both UDP and TCP after 20 tries: "
                f"{last_error}"
            )
        self._stopping.clear()
        self._wake = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, name=f"dns-{self.port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the sockets; safe to call twice."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        assert self._wake is not None
        self._stopping.set()
        self._wake[1].send(b"x")
        thread.join(timeout=5)
        if thread.is_alive():
            raise RuntimeError(f"DnsServer thread on port {self.port} did not stop within 5 s")
        for sock in self._wake:
            sock.close()
        self._wake = None

    def __enter__(self) -> DnsServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- serving ----------------------------------------------------------

    def _serve(self) -> None:
        assert self._udp is not None and self._tcp is not None and self._wake is not None
        buffers: dict[socket.socket, bytearray] = {}
        with selectors.DefaultSelector() as sel:
            sel.register(self._udp, selectors.EVENT_READ, "udp")
            sel.register(self._tcp, selectors.EVENT_READ, "accept")
            sel.register(self._wake[0], selectors.EVENT_READ, "wake")
            try:
                while not self._stopping.is_set():
                    for key, _events in sel.select():
                        sock = key.fileobj
                        assert isinstance(sock, socket.socket)
                        if key.data == "wake":
                            sock.recv(64)
                        elif key.data == "udp":
                            self._serve_udp(sock)
                        elif key.data == "accept":
                            conn, _peer = sock.accept()
                            conn.settimeout(5)
                            buffers[conn] = bytearray()
                            sel.register(conn, selectors.EVENT_READ, "tcp")
                        elif not self._serve_tcp(sock, buffers[sock]):
                            sel.unregister(sock)
                            del buffers[sock]
                            sock.close()
            finally:
                for conn in buffers:
                    conn.close()
                self._udp.close()
                self._tcp.close()

    def _serve_udp(self, sock: socket.socket) -> None:
        try:
            wire, peer = sock.recvfrom(65535)
        except OSError:
            return
        out = self._respond(wire, udp=True)
        if out is not None:
            sock.sendto(out, peer)

    def _serve_tcp(self, conn: socket.socket, buffer: bytearray) -> bool:
        """Read what is there, answer every complete query; False when the peer is gone."""
        try:
            data = conn.recv(65535)
        except OSError:
            return False
        if not data:
            return False
        buffer += data
        while len(buffer) >= 2:
            (length,) = struct.unpack("!H", buffer[:2])
            if len(buffer) < 2 + length:
                break
            wire = bytes(buffer[2 : 2 + length])
            del buffer[: 2 + length]
            out = self._respond(wire, udp=False)
            if out is None:
                continue
            try:
                conn.sendall(struct.pack("!H", len(out)) + out)
            except OSError:
                return False
        return True

    def _respond(self, wire: bytes, udp: bool) -> bytes | None:
        """The wire-format answer to one query, or None to stay silent.

        A bug here must not kill the serving thread and turn every later query
        into a timeout: it is recorded in ``errors`` and answered SERVFAIL.
        """
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        try:
            response = self._answer(query)
            if response is None:
                return None
            if not udp:
                # Without max_size, dnspython would hold a TCP answer to the
                # client's EDNS0 UDP payload size.
                return response.to_wire(max_size=65535)
            limit = query.payload if query.edns >= 0 else _UDP_DEFAULT_PAYLOAD
            try:
                return response.to_wire(max_size=max(limit, _UDP_DEFAULT_PAYLOAD))
            except dns.exception.TooBig:
                truncated = dns.message.make_response(query)
                truncated.flags |= dns.flags.TC | dns.flags.AA
                return truncated.to_wire()
        except Exception:  # reported through self.errors, see the docstring
            self.errors.append(traceback.format_exc())
            failure = dns.message.make_response(query)
            failure.set_rcode(dns.rcode.SERVFAIL)
            return failure.to_wire()

    def _answer(self, query: dns.message.Message) -> dns.message.Message | None:
        """The response to ``query``, or None to stay silent."""
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if query.opcode() != dns.opcode.QUERY or len(query.question) != 1:
            response.set_rcode(dns.rcode.NOTIMP)
            return response
        question = query.question[0]
        qname = question.name
        with self._lock:
            self.queries.append(_text_of(qname))
            entry = self._entries.get(qname)
            if entry is not None and entry.timeout:
                return None
            if entry is not None and entry.servfail:
                response.flags &= ~dns.flags.AA
                response.set_rcode(dns.rcode.SERVFAIL)
                return response
            # A name exists if it has an entry or is the parent of one (an
            # empty non-terminal such as _domainkey.example.com, RFC 8020).
            exists = entry is not None or any(name.is_subdomain(qname) for name in self._entries)
            txt = list(entry.txt) if entry is not None else []
        if question.rdclass not in (dns.rdataclass.IN, dns.rdataclass.ANY):
            response.set_rcode(dns.rcode.REFUSED)
            return response
        if txt and question.rdtype in (dns.rdatatype.TXT, dns.rdatatype.ANY):
            rrset = response.find_rrset(
                response.answer, qname, dns.rdataclass.IN, dns.rdatatype.TXT, create=True
            )
            for data in txt:
                rdata = dns.rdtypes.ANY.TXT.TXT(
                    dns.rdataclass.IN, dns.rdatatype.TXT, _split_character_strings(data)
                )
                rrset.add(rdata, self.ttl)
            return response
        if not exists:
            response.set_rcode(dns.rcode.NXDOMAIN)
        response.authority.append(_root_soa())
        return response


def _text_of(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


def _root_soa() -> dns.rrset.RRset:
    """SOA for negative answers (RFC 2308 section 3); minimum TTL 0: cache nothing."""
    return dns.rrset.from_text(
        dns.name.root, _TTL, "IN", "SOA", f"ns.invalid. hostmaster.invalid. 1 3600 600 86400 {_TTL}"
    )


# -- zone-file text -------------------------------------------------------


@dataclass
class _Token:
    kind: str  # "word", "quoted", "(", ")", "eol"
    text: str
    line: int
    starts_line: bool = False  # first token of a physical line, no leading blank


def _tokens(text: str) -> Iterator[_Token]:
    """Tokens of zone-file text; "eol" only outside parentheses (RFC 1035 section 5.1)."""
    depth = 0
    line = 1
    i = 0
    at_line_start = True
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            if depth == 0:
                yield _Token("eol", "", line)
            line += 1
            i += 1
            at_line_start = True
            continue
        if c in " \t\r":
            i += 1
            at_line_start = False
            continue
        starts = at_line_start
        at_line_start = False
        if c == ";":
            while i < n and text[i] != "\n":
                i += 1
            continue
        if c == "(":
            depth += 1
            yield _Token("(", c, line, starts)
            i += 1
            continue
        if c == ")":
            if depth == 0:
                raise ValueError(f"zone text line {line}: ')' without '('")
            depth -= 1
            yield _Token(")", c, line, starts)
            i += 1
            continue
        quoted = c == '"'
        if quoted:
            i += 1
        out = bytearray()
        while i < n:
            c = text[i]
            if quoted and c == '"':
                i += 1
                break
            if not quoted and (c in " \t\r\n;()" or c == '"'):
                break
            if c == "\n":
                raise ValueError(f"zone text line {line}: newline inside a quoted string")
            if c == "\\" and i + 1 < n:
                if text[i + 1 : i + 4].isdigit() and len(text[i + 1 : i + 4]) == 3:
                    out.append(int(text[i + 1 : i + 4]))
                    i += 4
                else:
                    out += text[i + 1].encode("utf-8")
                    i += 2
                continue
            out += c.encode("utf-8")
            i += 1
        else:
            if quoted:
                raise ValueError(f"zone text line {line}: unterminated quoted string")
        yield _Token("quoted" if quoted else "word", out.decode("utf-8"), line, starts)
    if depth:
        raise ValueError(f"zone text line {line}: '(' not closed")
    yield _Token("eol", "", line)


def _is_ttl(word: str) -> bool:
    return bool(word) and word[0].isdigit() and word.rstrip("smhdwSMHDW").isdigit()


def parse_zone_lines(text: str, origin: str | None = None) -> list[tuple[str, str]]:
    """(owner, joined TXT text) for every record in zone-file ``text``; see ``load_zone_lines``.

    >>> parse_zone_lines('a._domainkey.example.com. 60 IN TXT ( "v=DKIM1; " "p=AB" ) ; k')
    [('a._domainkey.example.com.', 'v=DKIM1; p=AB')]
    >>> parse_zone_lines('$ORIGIN example.org.\\ns1._domainkey IN TXT "p="')
    [('s1._domainkey.example.org.', 'p=')]
    """
    zone_origin = _name(origin) if origin else None
    records: list[tuple[str, str]] = []
    owner: str | None = None
    line_tokens: list[_Token] = []
    for token in _tokens(text):
        if token.kind != "eol":
            if token.kind not in ("(", ")"):
                line_tokens.append(token)
            continue
        if not line_tokens:
            continue
        tokens, line_tokens = line_tokens, []
        first = tokens[0]
        if first.kind == "word" and first.text.startswith("$"):
            directive = first.text.upper()
            if directive == "$ORIGIN" and len(tokens) == 2:
                zone_origin = _name(tokens[1].text)
            elif directive != "$TTL":
                raise ValueError(f"zone text line {first.line}: unsupported {first.text}")
            continue
        if first.starts_line:
            owner = _absolute(first.text, zone_origin)
            tokens = tokens[1:]
        elif owner is None:
            raise ValueError(f"zone text line {first.line}: record without an owner name")
        rest = list(tokens)
        while (
            rest
            and rest[0].kind == "word"
            and (_is_ttl(rest[0].text) or rest[0].text.upper() in ("IN", "CH", "HS"))
        ):
            rest.pop(0)
        if not rest or rest[0].kind != "word" or rest[0].text.upper() != "TXT":
            found = rest[0].text if rest else "nothing"
            raise ValueError(
                f"zone text line {first.line}: expected a TXT record for {owner}, found {found!r}"
            )
        records.append((owner, "".join(t.text for t in rest[1:])))
    return records


def _absolute(owner: str, origin: dns.name.Name | None) -> str:
    if owner == "@":
        if origin is None:
            raise ValueError("zone text uses '@' but no origin is known")
        return origin.to_text()
    if owner.endswith(".") or origin is None:
        return _name(owner).to_text()
    return dns.name.from_text(owner, origin=origin).to_text()
