"""Signing speed: ldapdkim against OpenDKIM, side by side, through the milter protocol.

One run sets up a throw-away slapd with one domain provisioned by ``ldapdkim
provision`` (one RSA-2048 key, rsa-sha256), starts ``ldapdkim run`` against
it and ``opendkim -f`` twice with the same key as a PEM file: ``opendkim`` in
single-key mode (Domain, Selector, KeyFile) and ``opendkim-kt`` with a
KeyTable and a refile SigningTable, as a multi-domain site configures it; all
three with the same canonicalization (relaxed/simple), SignHeaders and
OversignHeaders, each on a Unix socket (``--socket local``, the default, as
docs/mta.md recommends when the MTA is on the same host) or on a loopback TCP
socket (``--socket inet``).  Then :mod:`milterload` drives them
with the same messages, round by round and interleaved (A B C, C B A, ...)
so that drift hits all alike, for each body size and concurrency.  Per row it
reports msg/s (median of the rounds),
p50/p99 latency (connect to final reply, all rounds pooled), milter CPU ms
per message (``/proc/PID/stat`` utime+stime of the milter and its
descendants), peak RSS (VmHWM, reset before each round through
``/proc/PID/clear_refs``) and RSS above the idle milter, failures, and then
the ldapdkim/OpenDKIM ratios against each OpenDKIM configuration.

With ``ldapdkim-token`` or ``ldapdkim-wN-token`` among the engines, ldapdkim
also runs with its RSA-2048 key in a SoftHSM2 token (made by ``ldapdkim genkey
--pkcs11``; ``PKCS11Module``, ``PKCS11PinFile``): the token signs, each
worker through its own session.  The table then gives, per row, the msg/s
and CPU of each token engine against the same ldapdkim with in-process keys.
``ldapdkim-sealed`` or ``ldapdkim-wN-sealed`` do the same with the key sealed
(``genkey -c`` with a ``KeyEncryptionKey``), opened in memory once per worker.

Also measured over TCP: the same small rows with the driver's TCP_QUICKACK
off (the libmilter delayed-ACK stall).  And the driver's ceiling against
:mod:`nullmilter`, the LDAP operations ldapdkim caused (slapd's cn=monitor,
enabled for this run), and a sample of each engine's signed messages is
verified with Perl Mail::DKIM against a loopback DNS server serving what
``ldapdkim dns-records`` prints.

Run from the repository root after ``bash tests/setup.sh``::

    .venv/bin/python bench/bench_signing.py            # about 8 minutes
    .venv/bin/python bench/bench_signing.py --quick    # smoke test, under a minute
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ldap
import ldif
from benchlib import cpu_seconds, render, reset_peak_rss, status_kb
from harness import milterload
from harness.common import free_port, stop_process
from harness.dnsserver import DnsServer
from harness.milterpair import start_opendkim
from harness.milterproc import MilterProcess
from harness.provisioning import provision, run_cli, without_version_line
from harness.slapd import Slapd
from harness.softhsm import SoftHsm
from harness.verifiers import mail_dkim_verify, opendkim_binary

REPO = Path(__file__).resolve().parents[1]

DOMAIN = "bench.example.com"
SIGN_HEADERS = "From,To,Subject,Date,Message-ID,MIME-Version,Content-Type"
OVERSIGN_HEADERS = "From"
START_TIMEOUT = 15.0
ENGINES = ("ldapdkim", "ldapdkim-w2", "opendkim", "opendkim-kt")
"""The default engines.  ``ldapdkim-wN`` is ldapdkim with ``Workers N`` (a supervisor and
N worker processes); ``ldapdkim`` is ``Workers 1``."""


KEY_KINDS = {"-token": "keys in SoftHSM2", "-sealed": "sealed keys"}
"""Engine name suffixes for ldapdkim with another kind of key than plaintext, and their
names in the report."""


def key_kind(name: str) -> str:
    """The :data:`KEY_KINDS` suffix of an engine's name, or "" (plaintext keys)."""
    return next((suffix for suffix in KEY_KINDS if name.endswith(suffix)), "")


def ldapdkim_workers(name: str) -> int | None:
    """N for ``ldapdkim`` (1) and ``ldapdkim-wN``, with or without a :data:`KEY_KINDS`
    suffix; None for any other name."""
    name = name.removesuffix(key_kind(name))
    if name == "ldapdkim":
        return 1
    prefix, _, count = name.partition("-w")
    return int(count) if prefix == "ldapdkim" and count.isdigit() and int(count) > 0 else None


def known_engine(name: str) -> bool:
    return name in ENGINES or ldapdkim_workers(name) is not None


OPENDKIM_MODES = {"opendkim-kt": "kt", "opendkim": "single"}
"""The OpenDKIM engines ldapdkim is compared with, and their short names in the ratio table."""


# -- the milter processes ------------------------------------------------------------


class Engine:
    """A milter under test: a name, a socket, a process id."""

    name = ""
    socket = ""

    @property
    def pid(self) -> int:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def log_tail(self) -> str:
        raise NotImplementedError


class ProcessEngine(Engine):
    """An engine that is one process started here, logging to ``log_path``."""

    process: subprocess.Popen[bytes]
    log_path: Path
    stop_timeout = 15.0

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        stop_process(self.process, self.stop_timeout)

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])


class LdapdkimEngine(Engine):
    """``ldapdkim run`` (tests/harness/milterproc.py) against the bench slapd."""

    name = "ldapdkim"

    def __init__(
        self,
        workdir: Path,
        slapd: Slapd,
        workers: int = 1,
        unix: bool = True,
        *,
        base: str,
        token: SoftHsm | None = None,
        extra: Sequence[str] = (),
        mode: str = "s",
    ) -> None:
        """``base``: the container of the domain's entries; ``token``: sign with the keys
        in that SoftHSM2 token (the entries there hold their URIs); ``extra``: more
        configuration lines (a KeyEncryptionKey); ``mode``: ``Mode``."""
        lines = [
            f"Workers {workers}",
            f"Mode {mode}",
            f"Directory {slapd.ldap_uri}/{base}",
            f"LDAPBindUser {slapd.milter_dn}",
            f"LDAPBindPassword {slapd.milter_pw}",
            "Canonicalization relaxed/simple",
            f"SignHeaders {SIGN_HEADERS}",
            f"OversignHeaders {OVERSIGN_HEADERS}",
            "InternalHosts 127.0.0.1",
            "LogWhy no",
            *(token.config_lines() if token is not None else []),
            *extra,
        ]
        self.milter = MilterProcess(
            workdir,
            lines,
            unix_socket=workdir / "milter.sock" if unix else None,
            env=token.env if token is not None else None,
        )
        self.milter.start()
        self.socket = self.milter.socket
        self.config_path = self.milter.config_path

    @property
    def pid(self) -> int:
        assert self.milter.process is not None
        return self.milter.process.pid

    def own_counters(self) -> dict[str, int] | None:
        """ldapdkim's counters (``key=value``, with ``ldap_searches``), asked for with SIGUSR1.

        None if the process does not catch SIGUSR1 yet, or logs no counters within 2 s.
        """
        stats = self.milter.stats(timeout=2.0)
        if stats is None:
            return None
        return {k: int(v) for k, v in stats.items() if v.isdigit()}

    def stop(self) -> None:
        self.milter.stop()

    def log_tail(self) -> str:
        return "\n".join(self.milter.log().splitlines()[-20:])


class OpendkimEngine(ProcessEngine):
    """``opendkim -f -x CONF``, in one of two key configurations.

    ``opendkim`` (single-key mode: Domain, Selector, KeyFile): OpenDKIM reads
    KeyFile once at start and decodes the PEM per message.

    ``opendkim-kt`` (``KeyTable file:``, ``SigningTable refile:``, as a
    multi-domain site configures it): per message OpenDKIM matches the From
    address against the SigningTable's patterns, looks the key name up in the
    KeyTable, and reads the key file named there again (``dkimf_loadkey``:
    open, fstat, read) before decoding the PEM.

    Everything else is the same in both.  ``RequireSafeKeys no``: the key is
    mode 0600, but OpenDKIM also refuses any key below a world-writable
    directory such as /tmp, where this run's throw-away files live.
    """

    def __init__(
        self,
        workdir: Path,
        selector: str,
        pem: bytes,
        keytable: bool = False,
        unix: bool = True,
        *,
        mode: str = "s",
        extra: Sequence[str] = (),
        domain: str = DOMAIN,
    ) -> None:
        """``mode``: ``Mode``; ``extra``: more configuration lines (a resolver); ``domain``:
        the signing domain."""
        self.name = "opendkim-kt" if keytable else "opendkim"
        workdir.mkdir(parents=True, exist_ok=True)
        key = workdir / "bench.private"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        if keytable:
            key_table = workdir / "KeyTable"
            key_table.write_text(f"benchkey {domain}:{selector}:{key}\n")
            signing_table = workdir / "SigningTable"
            signing_table.write_text(f"*@{domain} benchkey\n")
            key_lines = [f"KeyTable file:{key_table}", f"SigningTable refile:{signing_table}"]
        else:
            key_lines = [f"Domain {domain}", f"Selector {selector}", f"KeyFile {key}"]
        port = free_port()
        socket_path = workdir / "milter.sock"
        self.socket = f"local:{socket_path}" if unix else f"inet:{port}@127.0.0.1"
        self.config_path = workdir / "opendkim.conf"
        self.config_path.write_text(
            "\n".join(
                [
                    f"Mode {mode}",
                    *key_lines,
                    "SignatureAlgorithm rsa-sha256",
                    "Canonicalization relaxed/simple",
                    f"SignHeaders {SIGN_HEADERS}",
                    f"OversignHeaders {OVERSIGN_HEADERS}",
                    "InternalHosts 127.0.0.1",
                    f"Socket {self.socket}",
                    "Background no",
                    "Syslog no",
                    "RequireSafeKeys no",
                    f"PidFile {workdir / 'opendkim.pid'}",
                    *extra,
                ]
            )
            + "\n"
        )
        self.log_path = workdir / "opendkim.log"
        self.process = start_opendkim(self.config_path, self.log_path, self.socket)


# -- LDAP operations, from slapd's cn=monitor --------------------------------------


class LdapCounter:
    """Completed LDAP operations in slapd, read from cn=monitor (enabled here for the run).

    The bench slapd serves nobody but ldapdkim (once set up); each reading is
    itself one search, which :meth:`delta` leaves out.
    """

    def __init__(self, slapd: Slapd) -> None:
        slapd.ldapmodify(
            "dn: cn=module{0},cn=config\nchangetype: modify\n"
            "add: olcModuleLoad\nolcModuleLoad: back_monitor\n",
            external=True,
        )
        slapd.ldapadd(
            "dn: olcDatabase=monitor,cn=config\nobjectClass: olcDatabaseConfig\n"
            f'olcDatabase: monitor\nolcAccess: to * by dn.exact="{slapd.root_dn}" read'
            " by * none\n",
            external=True,
        )
        self.conn = ldap.initialize(slapd.ldapi_uri)
        self.conn.sasl_external_bind_s()
        self.readings = 0

    def read(self) -> dict[str, int]:
        """Completed operations by type (lower case), and ``_readings`` so far."""
        found = self.conn.search_s(
            "cn=Operations,cn=Monitor",
            ldap.SCOPE_ONELEVEL,
            "(objectClass=*)",
            ["monitorOpCompleted"],
        )
        self.readings += 1
        counts = {
            dn.split(",", 1)[0].split("=", 1)[1].lower(): int(attrs["monitorOpCompleted"][0])
            for dn, attrs in found
        }
        counts["_readings"] = self.readings
        return counts

    @staticmethod
    def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
        """Operations between two readings, less the searches that were readings."""
        change = {name: after[name] - before.get(name, 0) for name in after}
        change["search"] -= change.pop("_readings")
        return {name: n for name, n in change.items() if n}

    def close(self) -> None:
        with contextlib.suppress(ldap.LDAPError):
            self.conn.unbind_s()


# -- one measurement --------------------------------------------------------------


@dataclass
class RoundStat:
    """One engine, one row, one round."""

    messages: int
    ok: int
    failures: dict[str, int]
    rate: float
    latency: list[float]
    eom_latency: list[float]
    cpu: float
    seconds: float
    """The round's wall time, for the cores the milter kept busy (``cpu / seconds``)."""
    peak_rss_kb: int
    driver_cpu: float
    ldap_ops: dict[str, int]
    errors: list[str]


@dataclass(frozen=True)
class RowSpec:
    size: int
    concurrency: int
    quickack: bool = True
    seconds: float | None = None
    """Length of a round; None: ``--round-seconds``."""

    @property
    def label(self) -> str:
        return f"{human_size(self.size)} c={self.concurrency}" + ("" if self.quickack else " noQA")


@dataclass
class Row:
    engine: str
    spec: RowSpec
    rounds: list[RoundStat] = field(default_factory=list)

    def summary(self, idle_rss_kb: int) -> dict[str, Any]:
        rounds = self.rounds
        latency = sorted(x for r in rounds for x in r.latency)
        eom = sorted(x for r in rounds for x in r.eom_latency)
        messages = sum(r.messages for r in rounds)
        failures: dict[str, int] = {}
        for r in rounds:
            for kind, n in r.failures.items():
                failures[kind] = failures.get(kind, 0) + n
        ldap_ops: dict[str, int] = {}
        for r in rounds:
            for kind, n in r.ldap_ops.items():
                ldap_ops[kind] = ldap_ops.get(kind, 0) + n
        peak = max((r.peak_rss_kb for r in rounds), default=0)
        return {
            "engine": self.engine,
            "body_bytes": self.spec.size,
            "concurrency": self.spec.concurrency,
            "quickack": self.spec.quickack,
            "rounds": len(rounds),
            "msg_per_s": round(statistics.median(r.rate for r in rounds), 1) if rounds else 0.0,
            "msg_per_s_rounds": [round(r.rate, 1) for r in rounds],
            "p50_ms": round(milterload.percentile(latency, 50) * 1000, 3),
            "p99_ms": round(milterload.percentile(latency, 99) * 1000, 3),
            "eom_p50_ms": round(milterload.percentile(eom, 50) * 1000, 3),
            "eom_p99_ms": round(milterload.percentile(eom, 99) * 1000, 3),
            "cpu_ms_per_msg": round(1000 * sum(r.cpu for r in rounds) / max(messages, 1), 3),
            "driver_cpu_ms_per_msg": round(
                1000 * sum(r.driver_cpu for r in rounds) / max(messages, 1), 3
            ),
            "cores": round(
                sum(r.cpu for r in rounds) / max(sum(r.seconds for r in rounds), 1e-9), 2
            ),
            "peak_rss_mb": round(peak / 1024, 1),
            "rss_above_idle_mb": round((peak - idle_rss_kb) / 1024, 1),
            "messages": messages,
            "failures": failures,
            "ldap_ops": ldap_ops,
            "errors": [e for r in rounds for e in r.errors][:5],
        }


def human_size(size: int) -> str:
    return f"{size // 1024}K" if size % 1024 == 0 else f"{size}B"


def parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("B")
    if text.endswith("K"):
        return int(float(text[:-1]) * 1024)
    if text.endswith("M"):
        return int(float(text[:-1]) * 1024 * 1024)
    return int(text)


def measure(
    engine: Engine,
    spec: RowSpec,
    args: argparse.Namespace,
    counter: LdapCounter | None,
    **load: Any,
) -> RoundStat:
    """One round of ``spec`` against ``engine``; ``load``: more :class:`LoadOptions`."""
    options = milterload.LoadOptions(
        **{
            "socket": engine.socket,
            "concurrency": spec.concurrency,
            "duration": spec.seconds or args.round_seconds,
            "body_size": spec.size,
            "domain": DOMAIN,
            "quickack": spec.quickack,
            "processes": min(spec.concurrency, args.driver_processes),
            **load,
        }
    )
    hwm_reset = reset_peak_rss(engine.pid)
    ldap_before = counter.read() if counter is not None else None
    cpu_before = cpu_seconds(engine.pid)
    result = milterload.run_load(options)
    cpu_after = cpu_seconds(engine.pid)
    ldap_ops = (
        LdapCounter.delta(ldap_before, counter.read())
        if counter is not None and ldap_before is not None
        else {}
    )
    memory = status_kb([engine.pid], ("VmRSS", "VmHWM"))
    return RoundStat(
        messages=result.messages,
        ok=result.ok,
        failures=dict(result.failures),
        rate=result.rate,
        latency=result.total_latency,
        eom_latency=result.eom_latency,
        cpu=cpu_after - cpu_before,
        seconds=result.elapsed,
        peak_rss_kb=memory["VmHWM"] if hwm_reset else memory["VmRSS"],
        driver_cpu=result.driver_cpu,
        ldap_ops=ldap_ops,
        errors=result.errors,
    )


# -- set-up ------------------------------------------------------------------------


def key_of(ldif_text: str) -> tuple[str, bytes]:
    """(selector, PEM) of the one key in ``ldapdkim provision``'s LDIF."""
    records = ldif.LDIFRecordList(io.StringIO(ldif_text))
    records.parse()
    for _, attrs in records.all_records:
        if "dkimSignPrivateKey" in attrs:
            return attrs["dkimSignSelector"][0].decode(), attrs["dkimSignPrivateKey"][0]
    raise RuntimeError("the provisioned LDIF holds no private key")


@contextlib.contextmanager
def bench_site(workdir: Path, engines: Sequence[str], unix: bool) -> Iterator[dict[str, Any]]:
    """slapd with one provisioned domain, the engines (on Unix sockets if ``unix``), the
    LDAP counter, a DNS server."""
    with contextlib.ExitStack() as stack:
        slapd = stack.enter_context(Slapd(workdir / "slapd"))
        base = slapd.new_container()
        ldif_text = provision([DOMAIN], base, workdir, "rsa-sha256")
        slapd.ldapadd(without_version_line(ldif_text))
        token, token_base = None, ""
        if any(key_kind(name) == "-token" for name in engines):
            token, token_base = token_site(workdir, slapd)
        kek_line, sealed_base = "", ""
        if any(key_kind(name) == "-sealed" for name in engines):
            kek_line, sealed_base = sealed_site(workdir, slapd)
        counter = LdapCounter(slapd)
        stack.callback(counter.close)
        selector, pem = key_of(ldif_text)
        started: dict[str, Engine] = {}
        for name in engines:
            engine: Engine
            workers = ldapdkim_workers(name)
            if workers is not None and key_kind(name) == "-token":
                engine = LdapdkimEngine(
                    workdir / name, slapd, workers, unix, base=token_base, token=token
                )
                engine.name = name
            elif workers is not None and key_kind(name) == "-sealed":
                engine = LdapdkimEngine(
                    workdir / name, slapd, workers, unix, base=sealed_base, extra=[kek_line]
                )
                engine.name = name
            elif workers is not None:
                engine = LdapdkimEngine(workdir / name, slapd, workers, unix, base=base)
                engine.name = name
            elif name in ("opendkim", "opendkim-kt"):
                engine = OpendkimEngine(workdir / name, selector, pem, name == "opendkim-kt", unix)
            else:
                raise SystemExit(f"unknown engine {name!r}: {', '.join(ENGINES)}")
            stack.callback(engine.stop)
            started[name] = engine
        dns = stack.enter_context(DnsServer())
        for container in [base, *(b for b in (token_base, sealed_base) if b)]:
            dns.load_zone_lines(dns_records(workdir, slapd, container))
        yield {"slapd": slapd, "engines": started, "counter": counter, "dns": dns}


def dns_records(workdir: Path, slapd: Slapd, container: str) -> str:
    """The zone lines ``ldapdkim dns-records`` prints for the domains in ``container``."""
    config = workdir / "dns-records.conf"
    config.write_text(
        f"Directory {slapd.ldap_uri}/{container}\n"
        f"LDAPBindUser {slapd.milter_dn}\nLDAPBindPassword {slapd.milter_pw}\n"
    )
    status, zone, err = run_cli("dns-records", "-c", str(config))
    if status != 0:
        raise RuntimeError(f"ldapdkim dns-records failed: {err}")
    return str(zone.decode())


def token_site(workdir: Path, slapd: Slapd) -> tuple[SoftHsm, str]:
    """A SoftHSM2 token with the domain's RSA-2048 key, made by ``genkey --pkcs11``, and the
    container of the domain's entries (the key entry holds the key's URI)."""
    token = SoftHsm(workdir / "softhsm")
    os.environ.update(token.env)  # for genkey, in this process
    base = slapd.new_container()
    status, out, err = run_cli(
        "genkey", "-d", DOMAIN, "-s", "tok", "--base", base, "--with-domain", "--pkcs11",
        "--pkcs11-module", str(token.module), "--pin-file", str(token.pin_file),
    )  # fmt: skip
    if status != 0:
        raise RuntimeError(f"ldapdkim genkey --pkcs11 failed: {err}")
    slapd.ldapadd(without_version_line(out.decode()))
    return token, base


def sealed_site(workdir: Path, slapd: Slapd) -> tuple[str, str]:
    """A KEK, and a container with the domain and an RSA-2048 key sealed with it, made by
    ``genkey -c``: the KeyEncryptionKey line and the container."""
    kek = workdir / "kek"
    status, _, err = run_cli("keys", "new-kek", str(kek))
    if status != 0:
        raise RuntimeError(f"ldapdkim keys new-kek failed: {err}")
    kek_line = f"KeyEncryptionKey bench {kek}"
    base = slapd.new_container()
    config = workdir / "sealing.conf"
    config.write_text(f"Directory {slapd.ldap_uri}/{base}\n{kek_line}\n")
    status, out, err = run_cli(
        "genkey", "-d", DOMAIN, "-s", "sealed", "--base", base, "--with-domain", "-c", str(config)
    )
    # The LDIF carries dkimSignPrivateKey in base64: "c2VhbGVkOnYxO" is "sealed:v1:".
    if status != 0 or b"c2VhbGVkOnYxO" not in out.replace(b"\n ", b""):
        raise RuntimeError(f"ldapdkim genkey -c did not seal the key: {err}")
    slapd.ldapadd(without_version_line(out.decode()))
    return kek_line, base


def token_ratios(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each engine with another kind of key (:data:`KEY_KINDS`) / the same ldapdkim with
    plaintext keys, per row."""
    by_key = {(s["engine"], s["body_bytes"], s["concurrency"], s["quickack"]): s for s in summaries}
    found = []
    for s in summaries:
        kind = key_kind(s["engine"])
        if not kind:
            continue
        plain = by_key.get(
            (s["engine"].removesuffix(kind), s["body_bytes"], s["concurrency"], s["quickack"])
        )
        if plain is None or not plain["msg_per_s"] or not plain["cpu_ms_per_msg"]:
            continue
        found.append(
            {
                "engine": s["engine"],
                "against": plain["engine"],
                "body_bytes": s["body_bytes"],
                "concurrency": s["concurrency"],
                "msg_per_s": s["msg_per_s"],
                "plain_msg_per_s": plain["msg_per_s"],
                "msg_per_s_ratio": round(s["msg_per_s"] / plain["msg_per_s"], 3),
                "cpu_ms_per_msg": s["cpu_ms_per_msg"],
                "plain_cpu_ms_per_msg": plain["cpu_ms_per_msg"],
                "cpu_ratio": round(s["cpu_ms_per_msg"] / plain["cpu_ms_per_msg"], 3),
            }
        )
    return found


def verify_samples(
    samples: list[bytes], dns_port: int, domain: str = DOMAIN
) -> tuple[int, list[str]]:
    """(passed, problems) of Perl Mail::DKIM over ``samples``, each signed by ``domain``."""
    passed = 0
    problems: list[str] = []
    for sample in samples:
        verdicts = mail_dkim_verify(sample, dns_port)
        results = [f"{v.result} ({v.detail})" if v.detail else v.result for v in verdicts]
        if len(verdicts) == 1 and verdicts[0].result == "pass" and verdicts[0].domain == domain:
            passed += 1
        elif len(problems) < 3:
            problems.append(", ".join(results) or "no signature")
    return passed, problems


# -- output ---------------------------------------------------------------------------

COLUMNS = (
    ("engine", "{engine:<11}"),
    ("body", "{body:>5}"),
    ("conc", "{conc:>4}"),
    ("QA", "{qa:>3}"),
    ("msg/s", "{rate:>8.1f}"),
    ("p50 ms", "{p50:>7.2f}"),
    ("p99 ms", "{p99:>7.2f}"),
    ("CPU ms/msg", "{cpu:>10.3f}"),
    ("cores", "{cores:>5.2f}"),
    ("peak RSS MB", "{peak:>11.1f}"),
    ("+idle MB", "{above:>8.1f}"),
    ("fail", "{fail:>5}"),
    ("LDAP srch", "{ldap:>9}"),
)


def format_table(summaries: list[dict[str, Any]]) -> str:
    rows = [
        {
            "engine": s["engine"],
            "body": human_size(s["body_bytes"]),
            "conc": s["concurrency"],
            "qa": "on" if s["quickack"] else "off",
            "rate": s["msg_per_s"],
            "p50": s["p50_ms"],
            "p99": s["p99_ms"],
            "cpu": s["cpu_ms_per_msg"],
            "cores": s["cores"],
            "peak": s["peak_rss_mb"],
            "above": s["rss_above_idle_mb"],
            "fail": sum(s["failures"].values()),
            "ldap": s["ldap_ops"].get("search", 0) if s["engine"] == "ldapdkim" else "-",
        }
        for s in summaries
    ]
    return render(COLUMNS, rows)


def ratios(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each ldapdkim engine / each OpenDKIM engine, msg/s and CPU ms/msg, per row (None:
    cannot divide)."""
    by_key = {(s["engine"], s["body_bytes"], s["concurrency"], s["quickack"]): s for s in summaries}
    found = []
    for s in summaries:
        if ldapdkim_workers(s["engine"]) is None:
            continue
        entry: dict[str, Any] = {
            "engine": s["engine"],
            "body_bytes": s["body_bytes"],
            "concurrency": s["concurrency"],
            "quickack": s["quickack"],
        }
        for engine in OPENDKIM_MODES:
            other = by_key.get((engine, s["body_bytes"], s["concurrency"], s["quickack"]))
            if other is None:
                continue
            entry[engine] = {
                "msg_per_s": round(s["msg_per_s"] / other["msg_per_s"], 3)
                if other["msg_per_s"]
                else None,
                "cpu_ms_per_msg": round(s["cpu_ms_per_msg"] / other["cpu_ms_per_msg"], 3)
                if other["cpu_ms_per_msg"]
                else None,
            }
        found.append(entry)
    return found


def format_ratios(entries: list[dict[str, Any]]) -> str:
    """ldapdkim / OpenDKIM: one line per row, two columns per OpenDKIM engine measured."""
    engines = [e for e in OPENDKIM_MODES if any(e in entry for entry in entries)]
    columns = [
        ("engine", "{engine:<11}"),
        ("body", "{body:>5}"),
        ("conc", "{conc:>4}"),
        ("QA", "{qa:>3}"),
    ]
    for engine in engines:
        mode = OPENDKIM_MODES[engine]
        width = len(f"vs {mode} msg/s")
        columns += [
            (f"vs {mode} msg/s", f"{{{engine}_rate:>{width}}}"),
            (f"vs {mode} CPU", f"{{{engine}_cpu:>{width - 2}}}"),
        ]
    rows = []
    for entry in entries:
        values = {
            "engine": entry["engine"],
            "body": human_size(entry["body_bytes"]),
            "conc": entry["concurrency"],
            "qa": "on" if entry["quickack"] else "off",
        }
        for engine in engines:
            pair = entry.get(engine, {})
            for key, column in (("msg_per_s", "rate"), ("cpu_ms_per_msg", "cpu")):
                value = pair.get(key)
                values[f"{engine}_{column}"] = "-" if value is None else f"{value:.2f}"
        rows.append(values)
    return render(columns, rows)


# -- main ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    parser.add_argument("--sizes", default="2K,100K", help="body sizes (default 2K,100K)")
    parser.add_argument("--concurrency", default="1,4,16", help="default 1,4,16")
    parser.add_argument("--rounds", type=int, help="rounds per row and engine (default 5)")
    parser.add_argument("--round-seconds", type=float, help="seconds per round (default 4)")
    parser.add_argument(
        "--engines",
        default=",".join(ENGINES),
        help=f"engines to run, in this order (default {','.join(ENGINES)})",
    )
    parser.add_argument(
        "--socket",
        choices=("local", "inet"),
        default="local",
        help="the milters' sockets: Unix (default, as on one host) or loopback TCP",
    )
    parser.add_argument(
        "--quickack",
        choices=("on", "off"),
        default="on",
        help="driver's TCP_QUICKACK for the main rows (default on, as a careful MTA)",
    )
    parser.add_argument(
        "--no-quickack-row",
        action="store_true",
        help="skip the extra 2K c=1 rows with TCP_QUICKACK off",
    )
    parser.add_argument("--verify", type=int, help="signed messages per engine to verify")
    parser.add_argument(
        "--driver-processes", type=int, default=2, help="load driver processes (default 2)"
    )
    parser.add_argument("--no-ceiling", action="store_true", help="skip the null-milter run")
    parser.add_argument("--json", type=Path, help="write every number here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    quick = args.quick
    args.rounds = args.rounds or (2 if quick else 5)
    args.round_seconds = args.round_seconds or (0.5 if quick else 4.0)
    args.verify = args.verify if args.verify is not None else (4 if quick else 20)
    args.size_list = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    args.concurrency_list = [int(c) for c in args.concurrency.split(",") if c.strip()]
    args.engine_list = [e.strip() for e in args.engines.split(",") if e.strip()]
    for name in args.engine_list:
        if not known_engine(name):
            parser.error(
                f"unknown engine {name!r}: {', '.join(ENGINES)} or ldapdkim-wN, "
                "with -token or -sealed"
            )
    if len(set(args.engine_list)) != len(args.engine_list) or not args.engine_list:
        parser.error("--engines: name each engine once")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    wall_start = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="ldapdkim-bench-"))
    quickack = args.quickack == "on"
    rows_specs = [
        RowSpec(size, conc, quickack) for size in args.size_list for conc in args.concurrency_list
    ]
    unix = args.socket == "local"
    if not args.no_quickack_row and quickack and not unix:
        # QUICKACK off: a milter that leaves Nagle on stalls ~40 ms per message.
        seconds = min(args.round_seconds, 2.0)
        rows_specs.append(RowSpec(args.size_list[0], 1, quickack=False, seconds=seconds))
    report: dict[str, Any] = {"settings": {}, "rows": [], "verification": {}, "ceiling": []}
    status = 0
    try:
        with bench_site(workdir, args.engine_list, unix) as site:
            engines: dict[str, Engine] = site["engines"]
            counter: LdapCounter = site["counter"]
            idle = {name: status_kb([e.pid], ("VmRSS",))["VmRSS"] for name, e in engines.items()}
            ldap_start = counter.read()
            ldapdkim_engine = engines.get("ldapdkim")
            own_start = (
                ldapdkim_engine.own_counters()
                if isinstance(ldapdkim_engine, LdapdkimEngine)
                else None
            )
            report["ldapdkim_source"] = source_version()
            print(
                f"bench: ldapdkim {report['ldapdkim_source']}, {opendkim_version()}",
                flush=True,
            )
            print(
                f"bench: {', '.join(engines)}; bodies {args.sizes}; concurrency "
                f"{args.concurrency}; {args.rounds} rounds of {args.round_seconds:g} s; "
                f"{args.socket} sockets; driver: {args.driver_processes} processes"
                + ("" if unix else f", TCP_QUICKACK {args.quickack}"),
                flush=True,
            )
            # Warm-up, which also collects the messages to verify.
            samples: dict[str, list[bytes]] = {name: [] for name in engines}
            warm_count = 20 if args.quick else 200
            for size in args.size_list:
                for name, engine in engines.items():
                    want = -(-args.verify // len(args.size_list))
                    warm = milterload.run_load(
                        milterload.LoadOptions(
                            socket=engine.socket,
                            concurrency=min(4, max(args.concurrency_list)),
                            count=warm_count,
                            body_size=size,
                            domain=DOMAIN,
                            sample=want,
                        )
                    )
                    if warm.failed:
                        raise RuntimeError(
                            f"{name} failed during warm-up: {warm.failures} {warm.errors[:3]}"
                            f"\n{engine.log_tail()}"
                        )
                    samples[name] += warm.samples
            rows = {(name, spec): Row(name, spec) for spec in rows_specs for name in engines}
            order = list(engines)
            for number in range(args.rounds):
                for spec in rows_specs:
                    for name in order if number % 2 == 0 else order[::-1]:
                        engine = engines[name]
                        use_counter = counter if name == "ldapdkim" else None
                        rows[(name, spec)].rounds.append(measure(engine, spec, args, use_counter))
                done = time.monotonic() - wall_start
                print(f"bench: round {number + 1}/{args.rounds} done at {done:.0f} s", flush=True)
            summaries = [
                rows[(name, spec)].summary(idle[name]) for spec in rows_specs for name in engines
            ]
            report["rows"] = summaries
            report["ratios"] = ratios(summaries)
            report["token_ratios"] = token_ratios(summaries)
            for name in engines:
                passed, problems = verify_samples(samples[name][: args.verify], site["dns"].port)
                report["verification"][name] = {
                    "verified": len(samples[name][: args.verify]),
                    "passed": passed,
                    "problems": problems,
                }
                if passed != len(samples[name][: args.verify]):
                    status = 1
            report["ldap_total"] = LdapCounter.delta(ldap_start, counter.read())
            if isinstance(ldapdkim_engine, LdapdkimEngine):
                own_end = ldapdkim_engine.own_counters()
                # replica_entries is a level, not a count: a difference means nothing.
                gauges = ("sessions", "replica_entries")
                report["ldapdkim_counters"] = (
                    {k: n - own_start.get(k, 0) for k, n in own_end.items() if k not in gauges}
                    if own_start is not None and own_end is not None
                    else None
                )
            report["messages_total"] = {
                name: sum(s["messages"] for s in summaries if s["engine"] == name)
                for name in engines
            }
            if not args.no_ceiling:
                report["ceiling"] = driver_ceiling(args, workdir if unix else None)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    wall = time.monotonic() - wall_start
    report["wall_seconds"] = round(wall, 1)
    report["settings"] = {
        "sizes": args.size_list,
        "concurrency": args.concurrency_list,
        "rounds": args.rounds,
        "round_seconds": args.round_seconds,
        "driver_processes": args.driver_processes,
        "socket": args.socket,
        "quickack": args.quickack,
        "sign_headers": SIGN_HEADERS,
        "canonicalization": "relaxed/simple",
        "key": "RSA 2048, rsa-sha256",
        "cpus": os.cpu_count(),
    }
    print_report(report)
    if any(sum(s["failures"].values()) for s in report["rows"]):
        status = 1
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return status


def opendkim_version() -> str:
    binary = opendkim_binary()
    if binary is None:
        return "no opendkim"
    done = subprocess.run([binary, "-V"], capture_output=True, text=True, check=False)
    first = (done.stdout or done.stderr).splitlines()
    return first[0].strip() if first else "opendkim (version unknown)"


def source_version() -> str:
    """The commit of this tree, and whether ldapdkim/ differs from it."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "ldapdkim"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit + (" with uncommitted changes in ldapdkim/" if dirty else "")


def driver_ceiling(args: argparse.Namespace, unix_dir: Path | None) -> list[dict[str, Any]]:
    """The driver against nullmilter.py at the largest concurrency, per body size, on a
    Unix socket in ``unix_dir`` or on a loopback port."""
    process, spec = milterload.start_null_milter(unix_dir=unix_dir)
    results = []
    try:
        conc = max(args.concurrency_list)
        for size in args.size_list:
            result = milterload.run_load(
                milterload.LoadOptions(
                    socket=spec,
                    concurrency=conc,
                    duration=min(3.0, args.round_seconds),
                    body_size=size,
                    domain=DOMAIN,
                    processes=min(conc, args.driver_processes),
                )
            )
            summary = result.summary()
            results.append(
                {
                    "body_bytes": size,
                    "concurrency": conc,
                    "msg_per_s": summary["msg_per_s"],
                    "p50_ms": summary["latency_ms"]["p50"],
                    "driver_cpu_ms_per_msg": summary["driver_cpu_ms_per_msg"],
                    "failures": summary["failures"],
                }
            )
    finally:
        process.terminate()
        process.wait()
    return results


def print_report(report: dict[str, Any]) -> None:
    print()
    print(format_table(report["rows"]))
    print()
    print(
        "msg/s: median of rounds; p50/p99: connect to final reply, rounds pooled;\n"
        "CPU: milter utime+stime per message; cores: its CPU seconds per second of the\n"
        "rounds; peak RSS: VmHWM (reset each round); +idle: above the RSS at start;\n"
        "LDAP srch: searches slapd completed during ldapdkim's rounds;\n"
        "opendkim: single-key mode (KeyFile); opendkim-kt: KeyTable + refile SigningTable."
    )
    compared = [e for e in OPENDKIM_MODES if any(e in entry for entry in report["ratios"])]
    if compared:
        print()
        print(format_ratios(report["ratios"]))
        print()
        print(
            "ldapdkim / OpenDKIM on the same row: msg/s above 1 is faster, CPU above 1 is\n"
            "costlier; " + ", ".join(f"{OPENDKIM_MODES[e]}: {e}" for e in compared) + "."
        )
    for t in report.get("token_ratios", []):
        print(
            f"{KEY_KINDS[key_kind(t['engine'])]}: {t['engine']} / {t['against']}, "
            f"{human_size(t['body_bytes'])} "
            f"c={t['concurrency']}: {t['msg_per_s']:.0f} / {t['plain_msg_per_s']:.0f} msg/s "
            f"= {t['msg_per_s_ratio']:.2f}x; CPU {t['cpu_ms_per_msg']:.2f} / "
            f"{t['plain_cpu_ms_per_msg']:.2f} ms/msg = {t['cpu_ratio']:.2f}x"
        )
    for s in report["rows"]:
        if s["errors"]:
            print(
                f"  {s['engine']} {human_size(s['body_bytes'])} c={s['concurrency']}: {s['errors']}"
            )
    driver = [s["driver_cpu_ms_per_msg"] for s in report["rows"] if s["quickack"]]
    if driver:
        print(
            f"driver CPU: {min(driver):.3f}-{max(driver):.3f} ms per message "
            f"(it shares the {os.cpu_count()} CPUs with the milter)"
        )
    for c in report["ceiling"]:
        print(
            f"driver ceiling (nullmilter.py, {human_size(c['body_bytes'])}, c={c['concurrency']}): "
            f"{c['msg_per_s']:.0f} msg/s, p50 {c['p50_ms']:.2f} ms, driver CPU "
            f"{c['driver_cpu_ms_per_msg']:.3f} ms/msg"
        )
    for name, v in report["verification"].items():
        problems = f"; {v['problems']}" if v["problems"] else ""
        print(f"verified with Perl Mail::DKIM: {name} {v['passed']}/{v['verified']} pass{problems}")
    if "ldap_total" in report:
        ops = ", ".join(f"{k} {n}" for k, n in sorted(report["ldap_total"].items()))
        signed = report["messages_total"].get("ldapdkim", 0)
        print(
            f"LDAP operations in slapd over the whole run (warm-up included): {ops or 'none'}; "
            f"ldapdkim answered {signed} measured messages"
        )
    if "ldapdkim_counters" in report:
        own = report["ldapdkim_counters"]
        print(
            "ldapdkim's own counters over the whole run (SIGUSR1 before and after): "
            + ", ".join(f"{k} {n}" for k, n in own.items())
            if own
            else "ldapdkim's own counters: none (it has no SIGUSR1 status line with "
            "ldap_searches=N yet); the LDAP numbers above come from slapd's cn=monitor"
        )
    print(f"wall time: {report['wall_seconds']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
