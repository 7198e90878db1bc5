"""Scale: ldapdkim's content-sync replica with a directory of N domains (default 100 000).

Every domain has its own domain entry and two key entries below it, an
RSA-2048 key (selector ``rNNNNNN``) and an Ed25519 key (``eNNNNNN``), both
active: 3N entries.  Generating 100 000 RSA-2048 keys takes over an hour on
this machine, so the RSA keys are drawn from a pool of ``--rsa-pool``
(default 200) keys, generated once and cached in the system temporary
directory (``ldapdkim-scale-rsa-pool-<size>.pem``); domain i gets pool key
i mod pool, in its own entry under its own selector.  The Ed25519 keys are
cheap and unique per domain.  The signing cost per message is the same
whether a key is shared or not; ldapdkim's key cache is keyed by entry, not
by key material, so the pool does not make its caches hit more.

Both milters run with ``Workers --workers`` (default 2): a supervisor and
its worker processes, one of which writes the replica database
(``StateDirectory/replica.mdb``, LMDB) that all of them read.  CPU time and
memory are added up over all of them.

Steps (all on one throw-away slapd from ``tests/harness/slapd.py``):

0. load: write the LDIF (``ldapdkim.directory.ldifout``), stop slapd, ``slapadd -q -n1``,
   start slapd; timed, but not a target;
1. initial sync: ``ldapdkim run`` with ``DirectorySync yes`` and an empty
   ``StateDirectory``; time from the start of the process until its SIGUSR1
   stats line says ``replica_entries=3N`` (polled every 0.25 s);
   target <= 30 s;
2. memory with the full replica: the sum over the milter's processes of
   ``RssAnon`` (memory of their own) and of PSS (shared pages, the
   database's among them, divided among the processes that map them);
   targets <= 250 MB and <= 600 MB, after the throughput rounds;
3. throughput: ``harness/milterload.py -c 4`` for ``--seconds`` (10) per round
   against this milter with three traffic patterns, and against a second
   milter (same settings) on a second slapd holding one domain with the same
   two key types (B); rounds interleaved A1 A2 A3 B, after ``--warmup``
   seconds of each.  A1: every message from one domain of the N (what the
   full replica costs by itself); A2: From domains drawn at random from a
   working set of ``--working-set`` (1000) of the N; A3: drawn at random from
   all N, so nearly every message comes from a domain not seen before and
   pays for parsing its keys and their first use.  Each A pattern's median
   msg/s is compared with B's (median of the rounds' ratios; target 0.90),
   next to the milter's own CPU time per message (from /proc, which the
   shared CPUs disturb less).  The client reads a domains file in every
   pattern (B's has one line), so it does the same work throughout;
4. restart: stop the milter, stop slapd so only the replica database can
   answer, start the milter again and time from the start of the process
   until it signs a message from a random domain of the set; target
   <= 0.3 s, as the median of five restarts.  The package is byte-compiled
   first, as an installed one is.
   Also the size of the database.

Run from the repository root::

    /tmp/venv/bin/python bench/bench_scale.py --domains 10000
    /tmp/venv/bin/python bench/bench_scale.py            # 100 000 domains
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import ldif
from benchlib import cpu_seconds, process_tree, pss_kb, status_kb
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from harness import milterload as ml
from harness import milterproc
from harness import milterproto as mp
from harness.common import wait_until_ready
from harness.slapd import Slapd

from ldapdkim import keys as ldapdkim_keys
from ldapdkim import schema, sealing
from ldapdkim.directory import ldifout
from ldapdkim.directory.replica.store import DATABASE
from ldapdkim.model import Algorithm
from ldapdkim.sealing import KeyEncryptionKey

_ROOT = Path(__file__).resolve().parents[1]

MilterProcess = milterproc.MilterProcess

TARGET_SYNC_S = 30.0
RESTARTS = 5
"""Restarts timed (one sample is at the mercy of whatever else the machine does)."""
TARGET_RESTART_S = 0.3
TARGET_ANON_MB = 250.0
TARGET_PSS_MB = 600.0
TARGET_THROUGHPUT = 0.10


def memory_mb(pid: int) -> dict[str, float]:
    """RssAnon, VmRSS, VmHWM and PSS added up over ``pid`` and its children, in MB."""
    tree = process_tree(pid)
    total = status_kb(tree, ("RssAnon", "VmRSS", "VmHWM"))
    return {**{k: v / 1024 for k, v in total.items()}, "Pss": pss_kb(tree) / 1024}


def _rsa_key(_: int) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def rsa_pool(size: int) -> tuple[list[rsa.RSAPrivateKey], str]:
    """``size`` RSA-2048 keys, cached in the temporary directory; and where they came from."""
    cache = Path(tempfile.gettempdir()) / f"ldapdkim-scale-rsa-pool-{size}.pem"
    marker = b"-----END PRIVATE KEY-----\n"
    if cache.exists():
        pems = [chunk + marker for chunk in cache.read_bytes().split(marker) if chunk.strip()]
        origin = f"cached in {cache}"
    else:
        started = time.perf_counter()
        with ProcessPoolExecutor(max(1, os.cpu_count() or 1)) as pool:
            pems = list(pool.map(_rsa_key, range(size), chunksize=8))
        fd = os.open(cache, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as stream:
            stream.write(b"".join(pems))
        origin = f"generated in {time.perf_counter() - started:.1f} s, cached in {cache}"
    # ldapdkim's loader: OpenSSL's slow key check skipped where cryptography allows it.
    keys = [ldapdkim_keys.load_private_key(pem, where=f"key {i}") for i, pem in enumerate(pems)]
    assert all(isinstance(k, rsa.RSAPrivateKey) for k in keys)
    return keys, origin  # type: ignore[return-value]


def domain_name(i: int) -> str:
    return f"d{i:06d}.scale.test"


def sealed(
    attrs: dict[str, list[bytes]], domain: str, kek: KeyEncryptionKey | None
) -> dict[str, list[bytes]]:
    """A key entry's attributes with its private key sealed for ``domain`` (``kek`` None:
    as they are)."""
    if kek is None:
        return attrs
    identity = sealing.KeyIdentity(
        domain,
        attrs[schema.SELECTOR][0].decode(),
        Algorithm.parse(attrs[schema.ALGORITHM][0].decode()),
    )
    private = ldapdkim_keys.load_private_key(attrs[schema.PRIVATE_KEY][0], where=domain)
    der = ldapdkim_keys.private_der(private)
    return {**attrs, schema.PRIVATE_KEY: [sealing.seal(der, kek, identity)]}


def write_ldif(
    path: Path,
    base: str,
    count: int,
    pool: list[rsa.RSAPrivateKey],
    kek: KeyEncryptionKey | None = None,
) -> None:
    """The domain and key entries of ``count`` domains, as LDIF for slapadd; with ``kek``,
    every private key sealed with it."""
    # An RSA key's attributes are the same in every entry that uses it: render them once.
    pool_attrs = [ldifout.key_record(base, "x", key)[1] for key in pool]
    with path.open("w") as out:
        # ldifout.LdifStream's writer without its "version: 1" line, which slapadd refuses.
        stream = ldif.LDIFWriter(out, base64_attrs=[schema.PRIVATE_KEY], cols=76)
        for i in range(count):
            name = domain_name(i)
            dn, attrs = ldifout.domain_record(name, base)
            stream.unparse(*(dn, attrs))
            rsa_attrs = dict(pool_attrs[i % len(pool)])
            rsa_attrs[schema.SELECTOR] = [f"r{i:06d}".encode()]
            rsa_dn = ldifout.child_dn(schema.SELECTOR, f"r{i:06d}", dn)
            stream.unparse(rsa_dn, sealed(rsa_attrs, name, kek))
            ed_dn, ed_attrs = ldifout.key_record(
                dn, f"e{i:06d}", ed25519.Ed25519PrivateKey.generate()
            )
            stream.unparse(ed_dn, sealed(ed_attrs, name, kek))


def _without_version(text: str) -> str:
    return text.removeprefix("version: 1\n\n")


def load_directory(slapd: Slapd, ldif: Path) -> float:
    """slapadd ``ldif`` into the stopped server's database; seconds for the slapadd."""
    slapd.stop()
    started = time.perf_counter()
    subprocess.run(
        ["slapadd", "-q", "-n1", "-F", str(slapd.config_dir), "-l", str(ldif)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    took = time.perf_counter() - started
    slapd.start()
    return took


def milter_lines(
    slapd: Slapd, state_dir: Path, workers: int, kek_line: str | None = None
) -> list[str]:
    state_dir.mkdir(parents=True, exist_ok=True)
    return [
        *([kek_line] if kek_line else []),
        "Mode s",
        f"Workers {workers}",
        f"Directory {slapd.ldap_uri}/{slapd.domains_base}",
        f"LDAPBindUser {slapd.milter_dn}",
        f"LDAPBindPassword {slapd.milter_pw}",
        "DirectorySync yes",
        f"StateDirectory {state_dir}",
        "InternalHosts 127.0.0.1",
        "LogWhy no",
        "SyslogSuccess no",
    ]


def signs(socket_spec: str, domain: str) -> bool:
    """One message from ``domain``: True if the milter signed it."""
    options = ml.LoadOptions(socket=socket_spec, domain=domain, timeout=10.0)
    try:
        session = ml.open_session(mp.MilterAddress.parse(socket_spec), options)
    except (OSError, ml.MessageFailed, mp.MilterProtocolError):
        return False
    try:
        plan = ml.MessagePlan(ml.make_message(domain, 2048), session.negotiated, options)
        outcome = ml.send_message(session, plan, "SCALE0001", True)
        ml.judge(outcome, require_signature=True)
    except (OSError, ml.MessageFailed, mp.MilterProtocolError):
        return False
    finally:
        session.close(polite=True)
    return True


def wait_until_signing(milter: MilterProcess, domain: str, *, timeout: float, pause: float) -> int:
    """Send ``milter`` one message from ``domain`` at a time, ``pause`` s apart, until it
    signs one; return how many that took.

    Raises:
        RuntimeError: the milter exited first or signed none within ``timeout`` s (the
            message quotes its log).
    """
    tries = 0

    def signed() -> bool:
        nonlocal tries
        tries += 1
        return signs(milter.socket, domain)

    wait_until_ready(
        "ldapdkim run",
        f"signing mail from {domain}",
        signed,
        timeout=timeout,
        process=milter.process,
        log=milter.log,
        interval=pause,
        max_interval=pause,
    )
    return tries


def load_command(socket_spec: str, seconds: float, json_path: Path, domains: Path) -> list[str]:
    argv = [sys.executable, "-m", "harness.milterload", "--socket", socket_spec]
    argv += ["-c", "4", "-d", f"{seconds:g}", "--json", str(json_path)]
    return [*argv, "--domains-file", str(domains)]


def run_load(argv: list[str], json_path: Path) -> dict[str, float]:
    subprocess.run(argv, check=False, stdout=subprocess.DEVNULL, cwd=ml.TESTS_DIR)
    summary: dict[str, float] = json.loads(json_path.read_text())
    return summary


def throughput(
    patterns: dict[str, tuple[MilterProcess, Path, str]],
    args: argparse.Namespace,
    tmp: Path,
    rows: list[tuple[str, str, str, str]],
) -> None:
    """Load rounds for each pattern, interleaved; each A pattern compared with B."""
    rates: dict[str, list[float]] = {label: [] for label in patterns}
    cpu_ms: dict[str, list[float]] = {label: [] for label in patterns}
    fails = dict.fromkeys(patterns, 0)
    commands = {}
    for label, (target, domains, _what) in patterns.items():
        # Not measured: each milter and pattern reaches its steady state first.
        out = tmp / f"warmup-{label}.json"
        run_load(load_command(target.socket, args.warmup, out, domains), out)
    for r in range(args.rounds):
        for label, (target, domains, _what) in patterns.items():
            out = tmp / f"load-{label}{r}.json"
            argv = load_command(target.socket, args.seconds, out, domains)
            commands[label] = argv
            assert target.process is not None
            before = cpu_seconds(target.process.pid)
            summary = run_load(argv, out)
            used = cpu_seconds(target.process.pid) - before
            rates[label].append(float(summary["messages"]) / args.seconds)
            cpu_ms[label].append(1000 * used / max(1, int(summary["messages"])))
            fails[label] += int(summary["messages"]) - int(summary.get("ok", 0))
    print(f"throughput rounds, after {args.warmup:g} s of warm-up for each pattern:")
    for label, (_target, _domains, what) in patterns.items():
        print(
            f"  {label} ({what}): msg/s {', '.join(f'{x:.1f}' for x in rates[label])}; "
            f"milter CPU ms/msg {', '.join(f'{x:.3f}' for x in cpu_ms[label])}; "
            f"failed {fails[label]}"
        )
        print(f"    {shlex.join(commands[label])}")
    b_rate, b_cpu = statistics.median(rates["B"]), statistics.median(cpu_ms["B"])
    rows.append(
        ("signing msg/s, 1-domain directory (B)", f"{b_rate:.1f} ({b_cpu:.3f} ms CPU/msg)", "", "")
    )
    for label, (_target, _domains, what) in patterns.items():
        if label == "B":
            continue
        ratio = statistics.median(x / y for x, y in zip(rates[label], rates["B"], strict=True))
        cpu = statistics.median(cpu_ms[label])
        rows.append(
            (f"signing msg/s, {what} ({label}) / B", f"{statistics.median(rates[label]):.1f} "
             f"/ B = {ratio:.3f} (CPU/msg x{cpu / b_cpu:.2f})", ">= 0.90",
             verdict(ratio >= 1 - TARGET_THROUGHPUT))
        )  # fmt: skip


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", type=int, default=100_000)
    parser.add_argument("--rsa-pool", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0, help="per throughput round")
    parser.add_argument("--rounds", type=int, default=3, help="A/B pairs of throughput rounds")
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="seconds of load per pattern before the rounds"
    )
    parser.add_argument(
        "--working-set", type=int, default=1000, help="domains in the A2 traffic pattern"
    )
    parser.add_argument("--workers", type=int, default=2, help="Workers of both milters")
    parser.add_argument("--sync-timeout", type=float, default=600.0)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--sealed",
        action="store_true",
        help="every private key sealed with a key-encryption key (both milters)",
    )
    args = parser.parse_args()
    n = args.domains
    wall = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="ldapdkim-scale-"))
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"work directory: {tmp}")
    # The milter starts as an installed package would: from bytecode, which pip and dpkg
    # compile at install time.  A checkout run with PYTHONDONTWRITEBYTECODE would
    # compile every module at each start instead (about 50 ms of the restart).
    compileall.compile_dir(str(_ROOT / "ldapdkim"), quiet=1)

    kek: KeyEncryptionKey | None = None
    kek_line: str | None = None
    if args.sealed:
        kek_path = tmp / "kek"
        kek_path.write_bytes(os.urandom(sealing.KEK_BYTES))
        kek_path.chmod(0o600)
        kek = KeyEncryptionKey("bench", kek_path.read_bytes())
        kek_line = f"KeyEncryptionKey bench {kek_path}"
        print("keys: sealed (AES-256-GCM under one KEK); each opened at its first use")
    pool, origin = rsa_pool(args.rsa_pool)
    print(
        f"keys: {n} domains x (RSA-2048 + Ed25519) = {3 * n} entries; RSA keys drawn from a "
        f"pool of {len(pool)} ({origin}), each domain its own entries and selectors; "
        "Ed25519 keys unique per domain"
    )
    domains_file = tmp / "domains.txt"
    domains_file.write_text("".join(domain_name(i) + "\n" for i in range(n)))
    one_file = tmp / "one-domain.txt"
    one_file.write_text("one.scale.test\n")
    rows: list[tuple[str, str, str, str]] = []

    with Slapd(tmp / "slapd") as big, Slapd(tmp / "slapd-one") as small:
        started = time.perf_counter()
        ldif = tmp / "scale.ldif"
        write_ldif(ldif, big.domains_base, n, pool, kek)
        ldif_s = time.perf_counter() - started
        slapadd_s = load_directory(big, ldif)
        print(
            f"load (not a target): LDIF written in {ldif_s:.1f} s "
            f"({ldif.stat().st_size / 1e6:.0f} MB), slapadd -q in {slapadd_s:.1f} s "
            f"({3 * n / slapadd_s:.0f} entries/s)"
        )
        one = tmp / "one.ldif"
        dn, attrs = ldifout.domain_record("one.scale.test", small.domains_base)
        one.write_text(
            _without_version(
                ldifout.render(
                    [
                        (dn, attrs),
                        (
                            ldifout.child_dn(schema.SELECTOR, "r000000", dn),
                            sealed(
                                ldifout.key_record(dn, "r000000", pool[0])[1], "one.scale.test", kek
                            ),
                        ),
                        (
                            ldifout.child_dn(schema.SELECTOR, "e000000", dn),
                            sealed(
                                ldifout.key_record(
                                    dn, "e000000", ed25519.Ed25519PrivateKey.generate()
                                )[1],
                                "one.scale.test",
                                kek,
                            ),
                        ),
                    ]
                )
            )
        )
        load_directory(small, one)

        # (1) initial sync from an empty StateDirectory.
        state = tmp / "state-big"
        milter = MilterProcess(tmp / "milter-big", milter_lines(big, state, args.workers, kek_line))
        t0 = time.perf_counter()
        milter.start()
        listening = time.perf_counter() - t0
        progress: list[tuple[float, int]] = []
        entries = 0
        while entries < 3 * n:
            if time.perf_counter() - t0 > args.sync_timeout:
                raise SystemExit(f"no full replica within {args.sync_timeout:g} s:\n{milter.log()}")
            found = milter.stats(timeout=5.0)
            if found is not None:
                entries = int(found.get("replica_entries", "0"))
                progress.append((time.perf_counter() - t0, entries))
            time.sleep(0.25)
        sync_s = time.perf_counter() - t0
        print(
            f"initial sync: listening after {listening:.2f} s, {3 * n} entries after "
            f"{sync_s:.1f} s ({3 * n / sync_s:.0f} entries/s overall)"
        )
        half = next((t for t, e in progress if e >= 3 * n // 2), None)
        if half is not None:
            print(f"  half the entries after {half:.1f} s")
        rows.append(
            ("initial sync (empty StateDirectory)", f"{sync_s:.1f} s", "<= 30 s",
             verdict(sync_s <= TARGET_SYNC_S))
        )  # fmt: skip
        time.sleep(2)  # the last commit, and the workers settle
        assert milter.process is not None
        mem = memory_mb(milter.process.pid)
        print(
            "memory with the full replica, all processes: RssAnon {RssAnon:.0f} MB, "
            "PSS {Pss:.0f} MB, VmRSS {VmRSS:.0f} MB".format(**mem)
        )

        # (3) throughput, N domains vs 1 domain, interleaved A B A B.
        one_milter = MilterProcess(
            tmp / "milter-one", milter_lines(small, tmp / "state-one", args.workers, kek_line)
        )
        one_milter.start()
        wait_until_signing(one_milter, "one.scale.test", timeout=30, pause=0.1)
        working = tmp / "working-set.txt"
        chosen = random.sample(range(n), min(args.working_set, n))
        working.write_text("".join(domain_name(i) + "\n" for i in chosen))
        single = tmp / "single.txt"
        single.write_text(domain_name(chosen[0]) + "\n")
        # Every load run reads a domains file, so the client (which shares the
        # CPUs) does the same work in each.
        patterns = {
            "A1": (milter, single, f"one domain of the {n}"),
            "A2": (milter, working, f"{len(chosen)} domains of the {n}, at random"),
            "A3": (milter, domains_file, f"all {n} domains, at random"),
            "B": (one_milter, one_file, "1-domain directory"),
        }
        throughput(patterns, args, tmp, rows)
        one_milter.stop()
        mem = memory_mb(milter.process.pid)
        rows.append(
            ("sum of RssAnon, all processes, after the rounds", f"{mem['RssAnon']:.0f} MB",
             "<= 250 MB", verdict(mem["RssAnon"] <= TARGET_ANON_MB))
        )  # fmt: skip
        rows.append(
            ("sum of PSS, all processes, after the rounds", f"{mem['Pss']:.0f} MB",
             "<= 600 MB", verdict(mem["Pss"] <= TARGET_PSS_MB))
        )  # fmt: skip
        rows.append(
            ("sum of VmRSS (shared pages counted in each)", f"{mem['VmRSS']:.0f} MB", "", "")
        )

        # (4) restart from the replica database alone.
        started = time.perf_counter()
        milter.stop()
        stop_s = time.perf_counter() - started
        big.stop()
        size = (state / DATABASE).stat().st_size
        restarts = []
        for _ in range(RESTARTS):
            t0 = time.perf_counter()
            milter.start(wait=False)
            domain = domain_name(random.randrange(n))  # noqa: S311 - not for secrets
            tries = wait_until_signing(milter, domain, timeout=30, pause=0.005)
            restarts.append(time.perf_counter() - t0)
            milter.stop()
            print(
                f"restart: first signature ({domain}) {restarts[-1]:.3f} s after the process "
                f"started ({tries} tries)"
            )
        restart_s = statistics.median(restarts)
        print(f"restart: milter stop {stop_s:.1f} s; slapd stopped; median of {RESTARTS} restarts")
        rows.append(
            (f"restart to first signature (slapd down), median of {RESTARTS}",
             f"{restart_s:.3f} s ({min(restarts):.3f} to {max(restarts):.3f})", "<= 0.3 s",
             verdict(restart_s <= TARGET_RESTART_S))
        )  # fmt: skip
        rows.append((f"{DATABASE} size", f"{size / 1e6:.0f} MB", "", ""))

    print()
    print(f"Scale, {n} domains ({3 * n} entries), RSA pool {len(pool)}:")
    print("| measure | value | target | |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"wall time {time.perf_counter() - wall:.0f} s")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
