"""The benchmarks still run: seconds of each, judged only on finishing with signatures verified.

The numbers are not looked at (two shared CPUs make them meaningless here);
what is checked is that ``bench/`` has not rotted: the scripts import, set up
their servers, drive the milters and exit 0, which ``bench_signing.py`` does only
when every message was signed and every sampled signature verified.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
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
