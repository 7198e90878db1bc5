"""Where one ldapdkim worker spends its CPU per message, under load through the milter.

One run starts a throw-away slapd with one domain provisioned by ``ldapdkim
provision`` (RSA-2048) and, for ``--mode verify``, a Knot DNS server that
publishes the key of another domain with a TTL of 300 s, so the milter caches
the key as it would in production.  Then, for each ``--tree`` (a source
checkout; this one by default), ``ldapdkim run`` with ``Workers 1`` on a Unix
socket, and a driver that plays the MTA over the milter protocol
(:mod:`milterload`'s sessions, one connection per message) at ``-c``
concurrent sessions:

* ``--mode sign``: messages from the provisioned domain, sent by an internal
  host (``Mode s``); each must come back with a DKIM-Signature inserted;
* ``--mode verify``: messages signed by dkimpy with the published key
  (relaxed/relaxed; Message-ID, which the driver rewrites per message, is
  left out of ``h=``), sent by an outside host (``Mode sv``); each must come
  back with an Authentication-Results field that says ``dkim=pass``.

It prints the milter's CPU ms per message (utime+stime from ``/proc``), the
median of ``--rounds`` interleaved rounds per tree and the ratio to the first
tree, and then, per tree, the top ``--top`` functions of a ``py-spy`` profile
of the worker (samples of threads on CPU), by own time and by inclusive time,
each also as estimated CPU µs per message.  Any message that fails ends the run
with exit status 1.

Run from the repository root::

    .venv/bin/python bench/profile_milter.py --mode verify --seconds 20
    git archive HEAD~3 | tar -x -C /tmp/before
    .venv/bin/python bench/profile_milter.py --mode sign --tree /tmp/before --tree .
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dkim
from benchlib import cpu_seconds, render
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from harness import milterload
from harness import milterproto as mp
from harness.authdns import Knot
from harness.common import accepts, start_and_wait, stop_process
from harness.milterproc import MilterProcess
from harness.provisioning import provision, without_version_line
from harness.slapd import Slapd

REPO = Path(__file__).resolve().parents[1]
SIGN_DOMAIN = "bench.example.com"
VERIFY_ZONE = "example.org"
VERIFY_DOMAIN = "mail.example.org"
VERIFY_SELECTOR = "bench"
AUTHSERV_ID = "mx.bench.test"
SIGNED_HEADERS = [b"from", b"to", b"subject", b"date", b"mime-version", b"content-type"]

Check = Callable[[milterload.Outcome], None]


# -- the messages and what each must come back with ------------------------------------


def signed_for_verify(size: int, private_pem: bytes) -> milterload.TestMessage:
    """The benchmark message from :data:`VERIFY_DOMAIN`, with dkimpy's signature on top."""
    plain = milterload.with_domain(milterload.make_message(SIGN_DOMAIN, size), VERIFY_DOMAIN)
    wire = b"".join(f"{n}: {v}\r\n".encode() for n, v in plain.headers) + b"\r\n" + plain.body
    field_ = dkim.sign(
        wire,
        VERIFY_SELECTOR.encode(),
        VERIFY_DOMAIN.encode(),
        private_pem,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=SIGNED_HEADERS,
    )
    name, _, value = field_.decode().partition(":")
    # As an MTA hands a folded field to a milter: LF line ends, no space after the colon.
    value = value.removeprefix(" ").replace("\r\n", "\n").rstrip("\n")
    return milterload.TestMessage(
        plain.sender, plain.recipients, ((name, value), *plain.headers), plain.body
    )


def _added_headers(outcome: milterload.Outcome) -> list[tuple[str, str]]:
    found = []
    for command, data in outcome.modifications:
        if command in (mp.SMFIR_INSHEADER, mp.SMFIR_ADDHEADER):
            start = 4 if command == mp.SMFIR_INSHEADER else 0
            name, value, *_ = data[start:].split(b"\0")
            found.append((name.decode(), value.decode("utf-8", "replace")))
    return found


def check_signed(outcome: milterload.Outcome) -> None:
    milterload.judge(outcome, require_signature=True)


def check_passed(outcome: milterload.Outcome) -> None:
    """Accepted, with our Authentication-Results saying ``dkim=pass``."""
    milterload.judge(outcome, require_signature=False)
    results = [v for n, v in _added_headers(outcome) if n.lower() == "authentication-results"]
    if not any(AUTHSERV_ID in v and "dkim=pass" in v for v in results):
        raise milterload.MessageFailed("no_signature", f"no dkim=pass: {results!r}")


@dataclass
class Site:
    """What the milters are configured with, what they are sent, and what must come back."""

    lines: list[str]
    message: milterload.TestMessage
    check: Check


def _key_record(key: rsa.RSAPrivateKey) -> str:
    """The TXT record as Knot's zone file takes it: 255-octet strings, quoted, in a row."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    text = f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
    # Knot writes the record inside one pair of quotes: close and reopen them.
    return '" "'.join(text[i : i + 255] for i in range(0, len(text), 255))


@contextlib.contextmanager
def bench_site(workdir: Path, mode: str, size: int) -> Iterator[Site]:
    with contextlib.ExitStack() as stack:
        slapd = stack.enter_context(Slapd(workdir / "slapd"))
        base = slapd.new_container()
        slapd.ldapadd(without_version_line(provision([SIGN_DOMAIN], base, workdir)))
        lines = [
            f"Directory {slapd.ldap_uri}/{base}",
            f"LDAPBindUser {slapd.milter_dn}",
            f"LDAPBindPassword {slapd.milter_pw}",
            "Canonicalization relaxed/simple",
            "SignHeaders From,To,Subject,Date,Message-ID,MIME-Version,Content-Type",
            "OversignHeaders From",
            f"AuthservID {AUTHSERV_ID}",
            "LogWhy no",
        ]
        if mode == "sign":
            lines += ["Mode s", "InternalHosts 127.0.0.1"]
            yield Site(lines, milterload.make_message(SIGN_DOMAIN, size), check_signed)
            return
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        owner = f"{VERIFY_SELECTOR}._domainkey.{VERIFY_DOMAIN}."
        knot = stack.enter_context(
            Knot(workdir / "knot", [VERIFY_ZONE], {owner: [_key_record(key)]})
        )
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # The driver's client address is 127.0.0.1: an outside host here.
        lines += ["Mode sv", "InternalHosts 192.0.2.1", f"Nameservers {knot.server}"]
        yield Site(lines, signed_for_verify(size, pem), check_passed)


# -- the milters ---------------------------------------------------------------------


def start_milter(workdir: Path, tree: Path, lines: list[str]) -> MilterProcess:
    """``ldapdkim run`` with the ``ldapdkim`` package of ``tree`` (checked), Workers 1."""
    env = {"PYTHONPATH": str(tree)}
    # -P: no current directory on sys.path, so PYTHONPATH decides which tree runs.
    program = [sys.executable, "-P", "-m", "ldapdkim"]
    where = subprocess.run(
        [sys.executable, "-P", "-c", "import ldapdkim; print(ldapdkim.__file__)"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(where).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"{tree} does not hold the ldapdkim that runs: {where}")
    milter = MilterProcess(
        workdir,
        ["Workers 1", *lines],
        unix_socket=workdir / "milter.sock",
        env=env,
        program=program,
    )
    milter.start()
    return milter


# -- the load ------------------------------------------------------------------------


@dataclass
class Load:
    ok: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def drive(socket: str, site: Site, concurrency: int, seconds: float) -> Load:
    """``concurrency`` sessions in a loop for ``seconds``: one connection, one message."""
    options = milterload.LoadOptions(socket=socket.replace("local:", "unix:", 1), duration=seconds)
    address = mp.MilterAddress.parse(options.socket)
    deadline = time.monotonic() + seconds
    load = Load()

    def worker(number: int) -> None:
        plans: dict[int, milterload.MessagePlan] = {}
        ok, failures, errors = 0, Counter[str](), list[str]()
        for sequence in itertools.count():
            if time.monotonic() >= deadline:
                break
            try:
                session = milterload.open_session(address, options)
                try:
                    protocol = session.negotiated.protocol
                    plan = plans.get(protocol)
                    if plan is None:
                        plan = milterload.MessagePlan(site.message, session.negotiated, options)
                        plans[protocol] = plan
                    queue_id = f"P{number:02X}{sequence:06X}"
                    site.check(milterload.send_message(session, plan, queue_id, first=True))
                finally:
                    session.close(polite=True)
            except Exception as err:  # counted; the run goes on
                failures[milterload._kind_of(err)] += 1
                if len(errors) < 3:
                    errors.append(str(err))
                continue
            ok += 1
        with load.lock:
            load.ok += ok
            load.failures.update(failures)
            load.errors += errors

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return load


def measured(milter: MilterProcess, run: Callable[[], Load]) -> tuple[Load, float]:
    """The load and the milter's CPU ms per message while it ran."""
    assert milter.process is not None
    before = cpu_seconds(milter.process.pid)
    load = run()
    spent = cpu_seconds(milter.process.pid) - before
    return load, 1000 * spent / max(load.ok, 1)


# -- the profile ---------------------------------------------------------------------


def py_spy(pid: int, seconds: float, output: Path, rate: int) -> None:
    """Record the thread of ``pid`` that holds the interpreter lock, as collapsed stacks
    (py-spy's raw format): Python's own CPU time, not libmilter's threads nor C code
    that lets the lock go (OpenSSL's RSA)."""
    program = Path(sys.executable).with_name("py-spy")
    if not program.exists():
        raise SystemExit(f"{program} is missing: pip install py-spy (or run with --no-profile)")
    subprocess.run(
        [str(program), "record", "--pid", str(pid), "--duration", str(int(seconds)),
         "--rate", str(rate), "--format", "raw", "--gil", "--nonblocking", "--output", str(output)],
        check=True, capture_output=True,
    )  # fmt: skip


def _function(frame: str) -> str:
    """``name (path:line)`` -> ``name (path)``: a function, whatever line ran.

    py-spy already gives paths relative to the entry of ``sys.path`` they were found in.
    """
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})"


NATIVE = "(no Python frame)"


def top_functions(raw: str, top: int, us_per_sample: float) -> str:
    """Tables of the ``top`` functions by own and by inclusive samples, each also in µs
    per message (``us_per_sample``: one sample's time shared by the messages of the run)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [_function(f) for f in stack.split(";") if " (" in f] or [NATIVE]
        total += int(count)
        own[frames[-1]] += int(count)
        for name in set(frames):
            inclusive[name] += int(count)
    columns = [("function", "{name:<78}"), ("%", "{share:5.1f}"), ("µs/msg", "{us:7.1f}")]
    parts = []
    for title, counts in (("own", own), ("inclusive", inclusive)):
        rows = [
            {"name": name[:78], "share": 100 * n / max(total, 1), "us": n * us_per_sample}
            for name, n in counts.most_common(top)
        ]
        heading = f"top {top} by {title} time ({total} samples, {total * us_per_sample:.1f} µs/msg)"
        parts.append(f"{heading}\n{render(columns, rows)}")
    return "\n\n".join(parts)


MARGIN = 1.0
"""Seconds the load runs before and after the profile."""


def profiled(
    milter: MilterProcess, site: Site, args: argparse.Namespace, raw: Path
) -> tuple[Load, float]:
    """py-spy's profile of ``milter`` into ``raw`` under load; the load and its CPU ms/msg."""
    assert milter.process is not None
    results: list[tuple[Load, float]] = []
    seconds = args.seconds + 2 * MARGIN

    def load() -> None:
        results.append(
            measured(milter, lambda: drive(milter.socket, site, args.concurrency, seconds))
        )

    driver = threading.Thread(target=load)
    driver.start()
    time.sleep(MARGIN)
    py_spy(milter.process.pid, args.seconds, raw, args.rate)
    driver.join()
    return results[0]


# -- the floor and the key operations -------------------------------------------------


class FloorProcess:
    """:mod:`harness.pynullmilter` (ldapdkim's callbacks and negotiation, no work) in a
    subprocess, on a Unix socket, answering as ldapdkim does in ``mode``."""

    def __init__(self, workdir: Path, mode: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.socket = f"local:{workdir / 'floor.sock'}"
        self.process = start_and_wait(
            [
                *(sys.executable, "-m", "harness.pynullmilter", "--socket", self.socket),
                *("--answer", mode, "--authserv-id", AUTHSERV_ID),
            ],
            name="floor milter",
            until=f"listening on {self.socket}",
            ready=lambda: accepts(self.socket),
            timeout=15,
            cwd=milterload.TESTS_DIR,
            log_path=workdir / "floor.log",
        )

    def stop(self) -> None:
        stop_process(self.process, 5)


def key_operations_ms(rounds: int = 400) -> tuple[float, float]:
    """CPU ms of one RSA-2048 signature and one verification (SHA-256 prehashed), here."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    digest, pad, prehashed = b"\x01" * 32, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256())
    started = time.process_time()
    for _ in range(rounds):
        signature = key.sign(digest, pad, prehashed)
    signing = (time.process_time() - started) / rounds
    public = key.public_key()
    started = time.process_time()
    for _ in range(rounds * 4):
        public.verify(signature, digest, pad, prehashed)
    return 1000 * signing, 1000 * (time.process_time() - started) / (rounds * 4)


# -- the run -------------------------------------------------------------------------


@dataclass
class Engine:
    """A milter under measurement: a name for the table, its socket and process id."""

    name: str
    socket: str
    pid: int
    cpu: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)


def interleaved_rounds(engines: list[Engine], site: Site, args: argparse.Namespace) -> int:
    """``args.rounds`` rounds over all engines, in turn and reversed every other round;
    each round's CPU ms/msg and msg/s go into the engine.  The failed messages."""
    failed = 0
    for round_ in range(args.rounds):
        for engine in engines if round_ % 2 == 0 else engines[::-1]:
            before = cpu_seconds(engine.pid)
            load = drive(engine.socket, site, args.concurrency, args.round_seconds)
            engine.cpu.append(1000 * (cpu_seconds(engine.pid) - before) / max(load.ok, 1))
            engine.rates.append(load.ok / args.round_seconds)
            failed += sum(load.failures.values())
            if load.failures:
                print(f"{engine.name}: failures {dict(load.failures)} {load.errors}")
    return failed


def cpu_table(engines: list[Engine], rsa_ms: tuple[float, float]) -> str:
    first = statistics.median(engines[0].cpu)
    rows = [
        {
            "name": e.name[-40:],
            "cpu": statistics.median(e.cpu),
            "ratio": statistics.median(e.cpu) / first,
            "rate": statistics.median(e.rates),
            "spread": f"{min(e.cpu):.3f}-{max(e.cpu):.3f}",
        }
        for e in engines
    ]
    columns = [
        ("milter", "{name:<40}"),
        ("CPU ms/msg", "{cpu:10.3f}"),
        ("/first", "{ratio:6.3f}"),
        ("msg/s", "{rate:7.0f}"),
        ("CPU range", "{spread:>13}"),
    ]
    keys = f"RSA-2048 here: sign {rsa_ms[0]:.3f} CPU ms, verify {rsa_ms[1]:.3f} CPU ms"
    return f"{render(columns, rows)}\n{keys}"


def profile_report(milter: MilterProcess, site: Site, args: argparse.Namespace) -> tuple[str, int]:
    """The py-spy tables of ``milter`` under load, and the failed messages."""
    with tempfile.TemporaryDirectory(prefix="profile-milter-raw-") as tmp:
        raw = Path(tmp) / "raw.txt"
        load, ms = profiled(milter, site, args, raw)
        text = raw.read_text()
    messages = load.ok * args.seconds / (args.seconds + 2 * MARGIN)
    heading = (
        f"{args.mode} profile of {milter.workdir.name}: py-spy --gil, {args.rate}/s for "
        f"{args.seconds:g} s, about {messages:.0f} messages; "
        f"{ms:.3f} CPU ms/msg in all (with libmilter and C without the lock)"
    )
    us_per_sample = 1e6 / args.rate / max(messages, 1)
    return f"{heading}\n\n{top_functions(text, args.top, us_per_sample)}\n", sum(
        load.failures.values()
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("sign", "verify"), required=True)
    parser.add_argument("--tree", type=Path, action="append", help="source checkout (repeat)")
    parser.add_argument("-c", "--concurrency", type=int, default=4)
    parser.add_argument("--size", type=int, default=2048, help="body bytes (default 2048)")
    parser.add_argument("--rounds", type=int, default=5, help="CPU rounds per milter")
    parser.add_argument("--round-seconds", type=float, default=3.0)
    parser.add_argument("--floor", action="store_true", help="also measure a do-nothing milter")
    parser.add_argument("--seconds", type=float, default=15.0, help="py-spy profile length")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--save", type=Path, help="write tree N's profile to SAVE-N.txt")
    args = parser.parse_args(argv)
    trees = [t.resolve() for t in args.tree or [REPO]]
    failed = 0
    with (
        tempfile.TemporaryDirectory(prefix="profile-milter-") as tmp,
        bench_site(Path(tmp), args.mode, args.size) as site,
        contextlib.ExitStack() as stack,
    ):
        milters, engines = [], []
        for n, tree in enumerate(trees):
            milter = start_milter(Path(tmp) / f"tree{n}", tree, site.lines)
            stack.callback(milter.stop)
            assert milter.process is not None
            milters.append(milter)
            engines.append(Engine(str(tree), milter.socket, milter.process.pid))
        if args.floor:
            floor = FloorProcess(Path(tmp) / "floor", args.mode)
            stack.callback(floor.stop)
            engines.append(Engine("floor: pymilter doing nothing", floor.socket, floor.process.pid))
        for engine in engines:  # warm-up: keys cached, code paths taken once
            warm = drive(engine.socket, site, args.concurrency, 2.0)
            failed += sum(warm.failures.values())
            if warm.failures:
                print(f"{engine.name}: warm-up failures {dict(warm.failures)} {warm.errors}")
        failed += interleaved_rounds(engines, site, args)
        print(
            f"\n{args.mode}, Workers 1, c={args.concurrency}, unix socket, "
            f"{args.size}-byte body, {args.rounds} rounds of {args.round_seconds:g} s"
        )
        print(cpu_table(engines, key_operations_ms()))
        for n, milter in enumerate([] if args.no_profile else milters):
            report, lost = profile_report(milter, site, args)
            failed += lost
            print(f"\n{report}")
            if args.save is not None:
                Path(f"{args.save}-{n}.txt").write_text(report)
    if failed:
        print(f"{failed} messages failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
