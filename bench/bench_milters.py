"""Signing and verifying on both socket kinds: ldapdkim against OpenDKIM and the protocol floor.

The sibling of ``bench_signing.py`` (whose engines, rounds and per-row numbers it
reuses) for the issue's table: for each mode (``sign``, ``verify``) and socket
kind (``local``: Unix, ``inet``: loopback TCP), the same engines side by side,
rounds interleaved (A B C D, D C B A, ...), each body size and concurrency:

* ``ldapdkim`` (``Workers 1``) and ``ldapdkim-w2`` (``Workers 2``, the default
  on two CPUs): keys from a throw-away slapd (``ldapdkim provision``, one
  RSA-2048 key), public keys from the loopback DNS server, both cached as in
  production (the key cache; dnspython's cache for TTL);
* ``opendkim`` (2.11, single-key mode for signing; verifying with
  ``QueryCache yes`` and ``Nameservers 127.0.0.1``, a second loopback DNS
  server on port 53 with the same records: its ``ResolverConfiguration``
  file, read again for each message, fails under concurrency);
* ``null``: :mod:`harness.pynullmilter`, a pymilter milter with ldapdkim's
  callbacks and negotiation that does nothing: its CPU per message is the
  floor under any pymilter milter.

Verifying, every engine gets one message per body size that OpenDKIM signed
for another domain (``sender.example.org``, its key in the same DNS server;
checked with Perl Mail::DKIM first), from a client outside InternalHosts;
every answer must add ``Authentication-Results`` with ``dkim=pass`` (counted;
exit 1 otherwise).  Signing, every answer must insert a
``DKIM-Signature``.  Over TCP the driver acknowledges at once (TCP_QUICKACK),
as an MTA behind a route with ``quickack`` does.

Printed: per row msg/s (median of rounds), p50, CPU ms per message and cores;
the RSA lines (one RSA-2048 signature and one verification, CPU ms, measured in
this run); ldapdkim / OpenDKIM per row against the issue's targets, met or
missed; and ldapdkim's CPU per message as floor + own work.

Run from the repository root after ``bash tests/setup.sh``::

    .venv/bin/python bench/bench_milters.py --quick      # smoke test, about 40 s
    .venv/bin/python bench/bench_milters.py --modes sign,verify --sockets local,inet \\
        --sizes 2K,100K --concurrency 1,4,16 --rounds 3 --round-seconds 4   # about 22 min
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_signing import (
    DOMAIN,
    Engine,
    LdapdkimEngine,
    OpendkimEngine,
    ProcessEngine,
    Row,
    RowSpec,
    dns_records,
    human_size,
    key_of,
    measure,
    opendkim_version,
    parse_size,
    source_version,
    verify_samples,
)
from benchlib import render, status_kb
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from harness import milterload
from harness.common import accepts, free_port, start_and_wait
from harness.dnsserver import DnsServer
from harness.milterload import TESTS_DIR
from harness.provisioning import provision, without_version_line
from harness.slapd import Slapd

MODES = ("sign", "verify")
SOCKETS = ("local", "inet")
ENGINES = ("ldapdkim", "ldapdkim-w2", "opendkim", "null")
SENDER_DOMAIN = "sender.example.org"
"""The verified messages' domain: signed elsewhere (by OpenDKIM, with a key of its own in
DNS), not one ldapdkim signs for."""
OUTSIDE_CLIENT = "192.0.2.1"
DNS53_HOST = "127.0.0.1"
KEY_TTL = 3600
"""The key records' TTL, as a site publishes them: the verifiers cache them for the run."""
"""The verify rows' client: outside InternalHosts (127.0.0.1), so every engine verifies."""

TARGETS = {
    ("sign", "local"): (1.5, 0.5),
    ("verify", "local"): (1.5, 0.6),
    ("sign", "inet"): (1.3, 0.7),
    ("verify", "inet"): (1.3, 0.8),
}
"""(mode, socket) -> (least msg/s ratio, most CPU ratio) of ldapdkim / OpenDKIM (issue 27)."""


class NullEngine(ProcessEngine):
    """:mod:`harness.pynullmilter`: pymilter and ldapdkim's negotiation, no work."""

    name = "null"
    stop_timeout = 5.0

    def __init__(self, workdir: Path, unix: bool, no_reply_over_tcp: bool) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.socket = f"unix:{workdir / 'null.sock'}" if unix else f"inet:{free_port()}@127.0.0.1"
        self.log_path = workdir / "null.log"
        no_reply = ["--no-reply", "on" if no_reply_over_tcp else "auto"]
        self.process = start_and_wait(
            [sys.executable, "-m", "harness.pynullmilter", "--socket", self.socket, *no_reply],
            name="pynullmilter",
            until=f"listening on {self.socket}",
            ready=lambda: accepts(self.socket),
            timeout=10,
            cwd=TESTS_DIR,
            log_path=self.log_path,
        )


@dataclass
class Site:
    """What every group of engines shares: slapd with the domain, its key, DNS."""

    workdir: Path
    slapd: Slapd
    base: str
    selector: str
    pem: bytes
    dns: DnsServer
    dns53: DnsServer
    """The same records on port 53, for OpenDKIM's Nameservers (which takes no port)."""


@contextlib.contextmanager
def bench_site(workdir: Path) -> Iterator[Site]:
    with (
        Slapd(workdir / "slapd") as slapd,
        DnsServer(ttl=KEY_TTL) as dns,
        DnsServer(host=DNS53_HOST, port=53, ttl=KEY_TTL) as dns53,
    ):
        base = slapd.new_container()
        ldif_text = provision([DOMAIN], base, workdir, "rsa-sha256")
        slapd.ldapadd(without_version_line(ldif_text))
        zone = dns_records(workdir, slapd, base)
        for server in (dns, dns53):
            server.load_zone_lines(zone)
            server.load_zone_lines(zone.replace(DOMAIN, SENDER_DOMAIN))
        selector, pem = key_of(ldif_text)
        yield Site(workdir, slapd, base, selector, pem, dns, dns53)


def start_engines(
    site: Site, names: Sequence[str], mode: str, unix: bool, args: argparse.Namespace
) -> dict[str, Engine]:
    """The engines of one group (mode, socket kind), started; stop them with stop_all."""
    letter = "s" if mode == "sign" else "v"
    group = site.workdir / f"{mode}-{'local' if unix else 'inet'}"
    resolver = [f"Nameservers 127.0.0.1:{site.dns.port}"]
    tcp = ["NoReplyOverTCP yes"] if args.tcp_no_reply and not unix else []
    started: dict[str, Engine] = {}
    try:
        for name in names:
            engine: Engine
            if name.startswith("ldapdkim"):
                workers = 2 if name == "ldapdkim-w2" else 1
                engine = LdapdkimEngine(
                    group / name, site.slapd, workers, unix, base=site.base,
                    extra=[*resolver, *tcp], mode=letter,
                )  # fmt: skip
                engine.name = name
            elif name == "opendkim":
                resolving = []  # signing looks nothing up
                if mode == "verify":
                    resolving = [f"Nameservers {site.dns53.host}", "QueryCache yes"]
                engine = OpendkimEngine(
                    group / name, site.selector, site.pem, False, unix, mode=letter,
                    extra=resolving,
                )  # fmt: skip
            else:
                engine = NullEngine(group / name, unix, args.tcp_no_reply)
            started[name] = engine
    except BaseException:
        stop_all(started)
        raise
    return started


def stop_all(engines: dict[str, Engine]) -> None:
    for engine in engines.values():
        with contextlib.suppress(Exception):
            engine.stop()


def signed_messages(site: Site, sizes: Sequence[int]) -> dict[int, Path]:
    """Per body size, a message OpenDKIM signed with the domain's key, checked with Perl
    Mail::DKIM against the loopback DNS server, written to a file."""
    signer = OpendkimEngine(site.workdir / "signer", site.selector, site.pem, domain=SENDER_DOMAIN)
    files: dict[int, Path] = {}
    try:
        for size in sizes:
            result = milterload.run_load(
                milterload.LoadOptions(
                    socket=signer.socket, count=1, body_size=size, domain=SENDER_DOMAIN, sample=1
                )
            )
            passed, problems = verify_samples(result.samples, site.dns.port, SENDER_DOMAIN)
            if result.failed or passed != 1:
                raise RuntimeError(f"OpenDKIM's signed {human_size(size)} message: {problems}")
            files[size] = site.workdir / f"signed-{human_size(size)}.eml"
            files[size].write_bytes(result.samples[0])
    finally:
        signer.stop()
    return files


def load_options(name: str, mode: str, message: Path | None) -> dict[str, Any]:
    """What the driver sends an engine and wants back, per mode (the null milter inserts a
    dummy DKIM-Signature and verifies nothing)."""
    if mode == "sign":
        return {}
    return {
        "message_file": str(message),
        "domain": SENDER_DOMAIN,
        "client_address": OUTSIDE_CLIENT,
        "require_signature": name == "null",
        "require_pass": name != "null",
    }


def rsa_costs(pem: bytes, seconds: float = 1.0) -> dict[str, float]:
    """CPU ms of one RSA-2048 PKCS#1 v1.5 SHA-256 signature and one verification, here."""
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    public = key.public_key()
    data = b"x" * 200
    signature = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    costs = {}
    for label, operation in (
        ("sign", lambda: key.sign(data, padding.PKCS1v15(), hashes.SHA256())),
        ("verify", lambda: public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())),
    ):
        count, start = 0, time.process_time()
        while time.process_time() - start < seconds:
            operation()
            count += 1
        costs[label] = round(1000 * (time.process_time() - start) / count, 4)
    return costs


def run_group(
    site: Site,
    mode: str,
    socket_kind: str,
    specs: Sequence[RowSpec],
    messages: dict[int, Path],
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    """Every row of one (mode, socket kind), rounds interleaved between the engines."""
    unix = socket_kind == "local"
    engines = start_engines(site, args.engine_list, mode, unix, args)
    try:
        idle = {name: status_kb([e.pid], ("VmRSS",))["VmRSS"] for name, e in engines.items()}
        for size in args.size_list:  # warm-up: keys parsed and cached, connections made
            for name, engine in engines.items():
                warm = milterload.run_load(
                    milterload.LoadOptions(
                        **{
                            "socket": engine.socket,
                            "concurrency": min(4, max(args.concurrency_list)),
                            "count": args.warm,
                            "body_size": size,
                            "domain": DOMAIN,
                            **load_options(name, mode, messages.get(size)),
                        }
                    )
                )
                if warm.failed:
                    raise RuntimeError(
                        f"{name} ({mode}, {socket_kind}) failed during warm-up: "
                        f"{warm.failures} {warm.errors[:3]}\n{engine.log_tail()}"
                    )
        rows = {(name, spec): Row(name, spec) for spec in specs for name in engines}
        order = list(engines)
        for number in range(args.rounds):
            for spec in specs:
                for name in order if number % 2 == 0 else order[::-1]:
                    extra = load_options(name, mode, messages.get(spec.size))
                    stat = measure(engines[name], spec, args, None, **extra)
                    rows[(name, spec)].rounds.append(stat)
            print(
                f"bench: {mode} {socket_kind}: round {number + 1}/{args.rounds} done at "
                f"{time.monotonic() - args.started:.0f} s",
                flush=True,
            )
    finally:
        stop_all(engines)
    summaries = []
    for spec in specs:
        for name in engines:
            summary = rows[(name, spec)].summary(idle[name])
            summary.update(mode=mode, socket=socket_kind)
            summary["dkim_pass"] = summary["messages"] - sum(summary["failures"].values())
            summaries.append(summary)
    return summaries


# -- the tables ---------------------------------------------------------------------


def _key(s: dict[str, Any]) -> tuple[str, str, int, int]:
    return (s["mode"], s["socket"], s["body_bytes"], s["concurrency"])


def _row_head(s: dict[str, Any]) -> dict[str, Any]:
    """What names a row of an engine: mode, socket, body size, concurrency, engine."""
    return {key: s[key] for key in ("mode", "socket", "body_bytes", "concurrency", "engine")}


def target_rows(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ldapdkim / OpenDKIM per row and ldapdkim engine, against the targets of the issue."""
    opendkim = {_key(s): s for s in summaries if s["engine"] == "opendkim"}
    found = []
    for s in summaries:
        other = opendkim.get(_key(s))
        if not s["engine"].startswith("ldapdkim") or other is None:
            continue
        least_rate, most_cpu = TARGETS[(s["mode"], s["socket"])]
        rate = s["msg_per_s"] / other["msg_per_s"] if other["msg_per_s"] else 0.0
        cpu = s["cpu_ms_per_msg"] / other["cpu_ms_per_msg"] if other["cpu_ms_per_msg"] else 0.0
        found.append(
            {
                **_row_head(s),
                "msg_per_s_ratio": round(rate, 3),
                "msg_per_s_target": least_rate,
                "cpu_ratio": round(cpu, 3),
                "cpu_target": most_cpu,
                "met": bool(rate >= least_rate and 0 < cpu <= most_cpu),
            }
        )
    return found


def floor_rows(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ldapdkim's CPU per message as the null milter's (the floor) + its own work."""
    null = {_key(s): s for s in summaries if s["engine"] == "null"}
    found = []
    for s in summaries:
        floor = null.get(_key(s))
        if not s["engine"].startswith("ldapdkim") or floor is None:
            continue
        found.append(
            {
                **_row_head(s),
                "cpu_ms_per_msg": s["cpu_ms_per_msg"],
                "floor_ms": floor["cpu_ms_per_msg"],
                "own_ms": round(s["cpu_ms_per_msg"] - floor["cpu_ms_per_msg"], 3),
            }
        )
    return found


MAIN_COLUMNS = (
    ("mode", "{mode:<6}"),
    ("socket", "{socket:<6}"),
    ("engine", "{engine:<11}"),
    ("body", "{body:>5}"),
    ("conc", "{conc:>4}"),
    ("msg/s", "{rate:>8.1f}"),
    ("p50 ms", "{p50:>7.2f}"),
    ("CPU ms/msg", "{cpu:>10.3f}"),
    ("cores", "{cores:>5.2f}"),
    ("fail", "{fail:>5}"),
)

TARGET_COLUMNS = (
    ("mode", "{mode:<6}"),
    ("socket", "{socket:<6}"),
    ("engine", "{engine:<11}"),
    ("body", "{body:>5}"),
    ("conc", "{conc:>4}"),
    ("msg/s x", "{rate:>7.2f}"),
    ("want", "{want_rate:>6}"),
    ("CPU x", "{cpu:>6.2f}"),
    ("want ", "{want_cpu:>6}"),
    ("", "{verdict}"),
)


def print_report(report: dict[str, Any]) -> None:
    rows = report["rows"]
    print()
    print(
        render(
            MAIN_COLUMNS,
            [
                {
                    "mode": s["mode"],
                    "socket": s["socket"],
                    "engine": s["engine"],
                    "body": human_size(s["body_bytes"]),
                    "conc": s["concurrency"],
                    "rate": s["msg_per_s"],
                    "p50": s["p50_ms"],
                    "cpu": s["cpu_ms_per_msg"],
                    "cores": s["cores"],
                    "fail": sum(s["failures"].values()),
                }
                for s in rows
            ],
        )
    )
    print(
        "\nmsg/s: median of rounds; p50: connect to final reply; CPU: the milter's utime+stime\n"
        "per message, all its processes; cores: its CPU seconds per second of the rounds;\n"
        "null: pymilter with ldapdkim's callbacks and negotiation, doing nothing (the floor)."
    )
    rsa_line = report["rsa"]
    print(
        f"\nRSA-2048 in this run: one signature {rsa_line['sign']:.3f} ms CPU, "
        f"one verification {rsa_line['verify']:.3f} ms CPU"
    )
    floors = {(s["mode"], s["socket"], s["body_bytes"], s["concurrency"]): s for s in rows}
    for key, s in sorted(floors.items()):
        if s["engine"] == "null":
            mode, socket_kind, size, conc = key
            print(
                f"floor (null milter) {mode} {socket_kind} {human_size(size)} c={conc}: "
                f"{s['cpu_ms_per_msg']:.3f} ms CPU/msg"
            )
    targets = report["targets"]
    if targets:
        print()
        print(
            render(
                TARGET_COLUMNS,
                [
                    {
                        "mode": t["mode"],
                        "socket": t["socket"],
                        "engine": t["engine"],
                        "body": human_size(t["body_bytes"]),
                        "conc": t["concurrency"],
                        "rate": t["msg_per_s_ratio"],
                        "want_rate": f">={t['msg_per_s_target']}",
                        "cpu": t["cpu_ratio"],
                        "want_cpu": f"<={t['cpu_target']}",
                        "verdict": "met" if t["met"] else "MISSED",
                    }
                    for t in targets
                ],
            )
        )
        met = sum(t["met"] for t in targets)
        print(f"\nldapdkim / OpenDKIM 2.11 on the same row: {met} of {len(targets)} targets met")
    print()
    for f in report["floor"]:
        print(
            f"ldapdkim CPU/msg, {f['engine']} {f['mode']} {f['socket']} "
            f"{human_size(f['body_bytes'])} c={f['concurrency']}: {f['cpu_ms_per_msg']:.3f} = "
            f"floor {f['floor_ms']:.3f} + own work {f['own_ms']:.3f} ms"
        )
    for name, counts in report["dkim_pass"].items():
        print(f"verify: {name} {counts['pass']}/{counts['messages']} answered dkim=pass")
    queries = report["dns_queries"]
    print(
        f"DNS queries over the run (keys cached as in production): {queries['ldapdkim']} to "
        f"ldapdkim's server (Mail::DKIM's checks among them), {queries['opendkim']} to "
        "OpenDKIM's (port 53)"
    )
    print(f"wall time: {report['wall_seconds']:.0f} s")


# -- main ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    parser.add_argument("--modes", default="sign,verify", help="default sign,verify")
    parser.add_argument("--sockets", default="local,inet", help="default local,inet")
    parser.add_argument("--sizes", help="body sizes (default 2K,100K; --quick: 2K)")
    parser.add_argument("--concurrency", help="default 1,4,16; --quick: 1")
    parser.add_argument("--rounds", type=int, help="rounds per row and engine (default 3)")
    parser.add_argument("--round-seconds", type=float, help="seconds per round (default 4)")
    parser.add_argument("--engines", default=",".join(ENGINES), help="any of the default")
    parser.add_argument(
        "--tcp-no-reply",
        action="store_true",
        help="over inet, ldapdkim with NoReplyOverTCP yes and the null milter likewise",
    )
    parser.add_argument(
        "--driver-processes", type=int, default=2, help="load driver processes (default 2)"
    )
    parser.add_argument("--json", type=Path, help="write every number here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    quick = args.quick
    args.rounds = args.rounds or (1 if quick else 3)
    args.round_seconds = args.round_seconds or (0.5 if quick else 4.0)
    args.warm = 20 if quick else 200
    args.size_list = [
        parse_size(s) for s in (args.sizes or ("2K" if quick else "2K,100K")).split(",")
    ]
    args.concurrency_list = [
        int(c) for c in (args.concurrency or ("1" if quick else "1,4,16")).split(",")
    ]
    args.mode_list = [m for m in args.modes.split(",") if m]
    args.socket_list = [s for s in args.sockets.split(",") if s]
    args.engine_list = [e for e in args.engines.split(",") if e]
    for given, known, what in (
        (args.mode_list, MODES, "--modes"),
        (args.socket_list, SOCKETS, "--sockets"),
        (args.engine_list, ENGINES, "--engines"),
    ):
        unknown = [g for g in given if g not in known]
        if unknown or not given:
            parser.error(f"{what}: {', '.join(unknown) or 'none'}; choose from {', '.join(known)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="ldapdkim-bench-"))
    specs = [RowSpec(size, conc) for size in args.size_list for conc in args.concurrency_list]
    report: dict[str, Any] = {"rows": []}
    try:
        with bench_site(workdir) as site:
            report["ldapdkim_source"] = source_version()
            print(f"bench: ldapdkim {report['ldapdkim_source']}, {opendkim_version()}", flush=True)
            print(
                f"bench: {', '.join(args.engine_list)}; {args.modes} on {args.sockets} sockets; "
                f"bodies {','.join(human_size(s) for s in args.size_list)}; concurrency "
                f"{','.join(map(str, args.concurrency_list))}; {args.rounds} rounds of "
                f"{args.round_seconds:g} s; NoReplyOverTCP {'yes' if args.tcp_no_reply else 'no'}",
                flush=True,
            )
            report["rsa"] = rsa_costs(site.pem)
            messages = signed_messages(site, args.size_list) if "verify" in args.mode_list else {}
            for socket_kind in args.socket_list:
                for mode in args.mode_list:
                    report["rows"] += run_group(site, mode, socket_kind, specs, messages, args)
            report["rsa_after"] = rsa_costs(site.pem)
            report["dns_queries"] = {
                "ldapdkim": len(site.dns.queries),
                "opendkim": len(site.dns53.queries),
            }
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    rows = report["rows"]
    report["targets"] = target_rows(rows)
    report["floor"] = floor_rows(rows)
    report["dkim_pass"] = {
        name: {
            "messages": sum(
                s["messages"] for s in rows if s["engine"] == name and s["mode"] == "verify"
            ),
            "pass": sum(
                s["dkim_pass"] for s in rows if s["engine"] == name and s["mode"] == "verify"
            ),
        }
        for name in args.engine_list
        if name != "null" and "verify" in args.mode_list
    }
    report["rsa"] = {
        op: round(statistics.mean((report["rsa"][op], report["rsa_after"][op])), 4)
        for op in ("sign", "verify")
    }
    report["wall_seconds"] = round(time.monotonic() - args.started, 1)
    report["settings"] = {
        k: v
        for k, v in vars(args).items()
        if k.endswith("_list") or k in ("rounds", "round_seconds", "tcp_no_reply")
    }
    print_report(report)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    failed = any(sum(s["failures"].values()) for s in rows)
    unverified = any(
        c["pass"] != c["messages"] or not c["messages"] for c in report["dkim_pass"].values()
    )
    return 1 if failed or unverified else 0


if __name__ == "__main__":
    sys.exit(main())
