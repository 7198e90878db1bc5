"""The benchmarks still run: seconds of each, judged only on finishing with signatures verified.

The numbers are not looked at (two shared CPUs make them meaningless here);
what is checked is that ``bench/`` has not rotted: the scripts import, set up
their servers, drive the milters and exit 0, which ``bench_signing.py`` does only
when every message was signed and every sampled signature verified.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from harness.authdns import require_knot
from harness.slapd import SLAPD_BINARIES, require_binaries
from harness.verifiers import require_mail_dkim, require_opendkim

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_signing_benchmark_runs_and_its_signatures_verify(tmp_path: Path) -> None:
    require_binaries(*SLAPD_BINARIES)
    require_opendkim()
    require_mail_dkim()
    report = tmp_path / "bench.json"
    argv = [sys.executable, "bench/bench_signing.py", "--quick", "--engines", "ldapdkim,opendkim"]
    argv += ["--sizes", "2K", "--concurrency", "1", "--no-ceiling", "--json", str(report)]
    run = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "verified with Perl Mail::DKIM: ldapdkim 4/4 pass" in run.stdout
    assert "verified with Perl Mail::DKIM: opendkim 4/4 pass" in run.stdout
    assert report.is_file()


def test_the_sign_and_verify_benchmark_runs_on_both_sockets_and_every_answer_passes(
    tmp_path: Path,
) -> None:
    """bench_milters.py: each mode on each socket kind; the verify rows count dkim=pass."""
    require_binaries(*SLAPD_BINARIES)
    require_opendkim()
    require_mail_dkim()
    report = tmp_path / "milters.json"
    argv = [sys.executable, "bench/bench_milters.py", "--quick", "--round-seconds", "0.3"]
    argv += ["--engines", "ldapdkim,opendkim,null", "--json", str(report)]
    run = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    numbers = json.loads(report.read_text())
    assert {(r["mode"], r["socket"]) for r in numbers["rows"]} == {
        (mode, socket) for mode in ("sign", "verify") for socket in ("local", "inet")
    }
    for name in ("ldapdkim", "opendkim"):
        counts = numbers["dkim_pass"][name]
        assert counts["pass"] == counts["messages"] > 0, counts
        assert re.search(rf"verify: {name} (\d+)/\1 answered dkim=pass", run.stdout), name
    assert len(numbers["targets"]) == 4 and "targets met" in run.stdout
    assert "floor (null milter) verify inet 2K c=1" in run.stdout
    assert numbers["rsa"]["sign"] > numbers["rsa"]["verify"] > 0


def test_load_driver_runs_alone_against_the_null_milter() -> None:
    argv = [sys.executable, "-m", "harness.milterload", "--null", "-c", "2", "-n", "40"]
    run = subprocess.run(argv, cwd=REPO / "tests", capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert '"ok": 40' in run.stdout


def test_arc_benchmark_runs_and_its_seals_verify() -> None:
    """bench_arc.py --quick: both variants run and the sampled ARC chains pass dkimpy."""
    require_binaries(*SLAPD_BINARIES)
    argv = [sys.executable, "bench/bench_arc.py", "--quick"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's ldapdkim, in any worktree
    run = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "sampled sealed messages: ARC chain passes with dkimpy" in run.stdout
    assert "sealing: " in run.stdout


@pytest.mark.parametrize("mode", ["sign", "verify"])
def test_the_profiling_tool_runs_and_every_message_signs_or_passes(mode: str) -> None:
    """profile_milter.py exits 0 only when every message came back signed (sign) or with
    dkim=pass (verify), the do-nothing floor milter's included."""
    require_binaries(*SLAPD_BINARIES)
    if mode == "verify":
        require_knot()
    argv = [sys.executable, "bench/profile_milter.py", "--mode", mode, "--floor", "--rounds", "1",
            "--round-seconds", "1", "--seconds", "2", "--top", "5"]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "floor: pymilter doing nothing" in done.stdout
    assert "top 5 by own time" in done.stdout
