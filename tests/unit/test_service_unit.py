"""The systemd unit: hardened, notify-typed, and in step with the program's exit statuses."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

from ldapdkim.cli.main import main

UNIT = Path(__file__).resolve().parents[2] / "conf" / "ldapdkim.service"
MAX_EXPOSURE = 2.5


def service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def test_systemd_rates_the_unit_at_most_2_5() -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is missing: tests/setup.sh installs systemd"
    run = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", run.stdout)
    assert match is not None, run.stdout + run.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, run.stdout


def test_the_milter_runs_as_its_own_user_and_tells_systemd_when_it_is_ready() -> None:
    unit = service()
    assert (unit["Type"], unit["User"], unit["NotifyAccess"]) == ("notify", "ldapdkim", "main")
    assert unit["CapabilityBoundingSet"] == ""


def test_a_configuration_error_is_not_restarted_and_is_exit_status_2(tmp_path: Path) -> None:
    """RestartPreventExitStatus names what ``ldapdkim run`` exits with on a bad file."""
    bad = tmp_path / "bad.conf"
    bad.write_text("Mode sv\nSocket nowhere\n")
    assert main(["run", "-c", str(bad)]) == 2
    assert service()["RestartPreventExitStatus"] == "2"


def test_the_unit_runs_the_program_the_package_installs() -> None:
    unit = service()
    assert unit["ExecStart"] == "/usr/bin/ldapdkim run -c /etc/ldapdkim/ldapdkim.conf"
    assert unit["ExecStartPre"].startswith("/usr/bin/ldapdkim check-config ")
