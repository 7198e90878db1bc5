"""A throw-away authoritative DNS server that takes signed dynamic updates: Knot DNS.

This module's one job is :class:`Knot`: a private ``knotd`` in a temporary
directory on a free 127.0.0.1 port (UDP and TCP), primary for the zones it is
given, that accepts RFC 2136 updates and zone transfers signed with one TSIG
key (RFC 8945), and the means for tests to read back what it serves.

What the server has:

* one TSIG key, ``ldapdkim-update.`` (hmac-sha256, a fresh random secret),
  written for clients as a key file in BIND's format (``key_file``), the form
  ``tsig-keygen`` writes and ``nsupdate -k`` and ``ldapdkim dns-records
  --tsig-key-file`` read;
* an ACL that allows update and transfer with that key only;
* each zone with an SOA, an NS ``ns.ZONE`` with its A record 127.0.0.1, and
  any TXT records the test gives (``records``); zone files are never written
  back, changes live in the journal under the work directory.

Readiness is polled with a deadline: every zone must answer its SOA
authoritatively over TCP.  ``knotd`` missing skips the test locally and fails
it in CI (``CI`` set).

Example::

    with Knot(tmp_path / "knot", ["example.test"]) as dns:
        run_cli("dns-records", ..., "--apply", "--server", dns.server,
                "--tsig-key-file", str(dns.key_file))
        assert dns.txt_records("example.test")["s1._domainkey.example.test."] == [...]
"""

from __future__ import annotations

import base64
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rdtypes.txtbase
import dns.tsig
import dns.zone

from harness.common import find_binary, skip_or_fail, start_and_wait, stop_process

KEY_NAME = "ldapdkim-update."
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


class KnotError(RuntimeError):
    """knotd could not be started, or did not answer in time."""


def require_knot() -> None:
    """Skip (locally) or fail (in CI) unless ``knotd`` is installed."""
    if find_binary("knotd") is None:
        skip_or_fail("missing knotd; install Knot DNS (Debian: apt-get install knot)")


def write_key_file(path: Path, name: str, secret: bytes, algorithm: str = "hmac-sha256") -> Path:
    """Write a TSIG key file in BIND's format, as ``tsig-keygen`` does."""
    encoded = base64.b64encode(secret).decode()
    path.write_text(f'key "{name}" {{\n\talgorithm {algorithm};\n\tsecret "{encoded}";\n}};\n')
    path.chmod(0o600)
    return path


def _free_udp_and_tcp_port() -> int:
    """A port free on 127.0.0.1 for both TCP and UDP a moment ago."""
    for _attempt in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port: int = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise KnotError("no loopback port free for both TCP and UDP after 20 tries")


class Knot:
    """A ``knotd`` serving ``zones`` on 127.0.0.1, updatable with :data:`KEY_NAME`.

    Args:
        workdir: a fresh directory for configuration, zones, journal and log.
        zones: zone names, e.g. ``["example.test"]``.
        records: TXT records to put into the zone files, owner name (absolute)
            -> texts, one record per text.
    """

    def __init__(
        self,
        workdir: Path,
        zones: Sequence[str],
        records: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.workdir = workdir
        self.zones = [zone.rstrip(".").lower() + "." for zone in zones]
        self.records = dict(records or {})
        self.secret = secrets.token_bytes(32)
        self.key_file = workdir / "update.key"
        self.log_path = workdir / "knotd.log"
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._rundir: Path | None = None

    @property
    def server(self) -> str:
        """``127.0.0.1:PORT``, as ``--server`` takes it."""
        return f"127.0.0.1:{self.port}"

    def _keyring(self) -> dict[dns.name.Name, dns.tsig.Key]:
        key = self.key()
        return {key.name: key}

    def key(self) -> dns.tsig.Key:
        return dns.tsig.Key(KEY_NAME, self.secret, dns.tsig.HMAC_SHA256)  # type: ignore[no-untyped-call]

    # ---- lifecycle --------------------------------------------------------

    def start(self) -> None:
        knotd = find_binary("knotd")
        if knotd is None:
            raise KnotError("knotd not found on PATH or in the sbin directories; install knot")
        self.workdir.mkdir(parents=True, exist_ok=False)
        write_key_file(self.key_file, KEY_NAME, self.secret)
        # The control socket must fit in 108 bytes; pytest's paths may not.
        self._rundir = Path(tempfile.mkdtemp(prefix="knot-"))
        self.port = _free_udp_and_tcp_port()
        config = self._write_config()
        try:
            self._process = start_and_wait(
                [knotd, "-c", str(config)],
                name="knotd",
                until=f"serving {', '.join(self.zones)} on 127.0.0.1:{self.port}",
                ready=self._serves_every_zone(),
                timeout=READY_TIMEOUT,
                log_path=self.log_path,
                error=KnotError,
            )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop knotd and remove its control directory; safe to call twice."""
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, STOP_TIMEOUT)
        if self._rundir is not None:
            shutil.rmtree(self._rundir, ignore_errors=True)
            self._rundir = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- reading back -----------------------------------------------------

    def soa_serial(self, zone: str) -> int:
        response = self._query(zone, dns.rdatatype.SOA)
        serial: int = response.answer[0][0].serial
        return serial

    def txt_records(self, zone: str) -> dict[str, list[tuple[int, str]]]:
        """Every TXT RRset of ``zone``, by zone transfer (AXFR, signed with the key).

        Returns:
            owner name (absolute, lowercase) -> sorted (TTL, text) pairs, each
            text the record's character-strings joined (RFC 6376 §3.6.2.2).
        """
        zone_name = zone.rstrip(".") + "."
        transferred = dns.zone.from_xfr(
            dns.query.xfr(
                "127.0.0.1", zone_name, port=self.port, keyring=self._keyring(), lifetime=5
            )
        )
        found: dict[str, list[tuple[int, str]]] = {}
        origin = transferred.origin
        assert origin is not None  # a transferred zone has one
        for name, ttl, rdata in transferred.iterate_rdatas(dns.rdatatype.TXT):
            owner = name.derelativize(origin).to_text().lower()
            assert isinstance(rdata, dns.rdtypes.txtbase.TXTBase)
            text = b"".join(rdata.strings).decode()
            found.setdefault(owner, []).append((ttl, text))
        return {owner: sorted(pairs) for owner, pairs in found.items()}

    # ---- internals --------------------------------------------------------

    def _write_config(self) -> Path:
        zone_dir = self.workdir / "zones"
        zone_dir.mkdir()
        (self.workdir / "db").mkdir()  # journal and timers; knotd does not create it
        for zone in self.zones:
            lines = [
                f"$ORIGIN {zone}",
                "$TTL 300",
                "@ SOA ns hostmaster 1 3600 600 86400 300",
                "@ NS ns",
                "ns A 127.0.0.1",
            ]
            for owner, texts in self.records.items():
                if owner.endswith("." + zone) or owner == zone:
                    lines += [f'{owner} 300 TXT "{text}"' for text in texts]
            (zone_dir / f"{zone.rstrip('.')}.zone").write_text("\n".join(lines) + "\n")
        secret = base64.b64encode(self.secret).decode()
        zones = "\n".join(f"  - domain: {zone}\n    acl: update" for zone in self.zones)
        config = self.workdir / "knot.conf"
        config.write_text(
            f"""\
server:
    listen: 127.0.0.1@{self.port}
    rundir: {self._rundir}
log:
  - target: stderr
    any: info
database:
    storage: {self.workdir / "db"}
key:
  - id: {KEY_NAME}
    algorithm: hmac-sha256
    secret: {secret}
acl:
  - id: update
    key: {KEY_NAME}
    action: [update, transfer]
template:
  - id: default
    storage: {zone_dir}
    file: "%s.zone"
    zonefile-sync: -1
zone:
{zones}
"""
        )
        return config

    def _query(self, name: str, rdtype: dns.rdatatype.RdataType) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype)
        return dns.query.tcp(query, "127.0.0.1", port=self.port, timeout=2)

    def _serves_every_zone(self) -> Callable[[], bool]:
        """A readiness check: each zone's SOA, over TCP, answered authoritatively."""
        pending = list(self.zones)

        def ready() -> bool:
            while pending:
                try:
                    response = self._query(pending[0], dns.rdatatype.SOA)
                except (OSError, dns.exception.DNSException):
                    return False
                if response.rcode() != dns.rcode.NOERROR or not response.flags & dns.flags.AA:
                    return False
                pending.pop(0)
            return True

        return ready
