"""``pip install .``: the other way in, beside the Debian package.

A wheel of this checkout installed into a new virtual environment (seeing
Debian's python3-* libraries, so nothing is downloaded) gives a working
``ldapdkim`` command and its manual pages under the environment's prefix.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ldapdkim

ROOT = Path(__file__).resolve().parents[2]


def test_pip_installs_the_command_and_the_manual_pages(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run(
        ["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)], check=True
    )
    wheels = tmp_path / "wheels"
    # The build uses the test environment's setuptools (no download).
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(wheels), str(ROOT)],
        check=True, capture_output=True,
    )  # fmt: skip
    [wheel] = wheels.glob("ldapdkim-*.whl")
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    version = subprocess.run(
        [str(venv / "bin" / "ldapdkim"), "-V"], capture_output=True, text=True, check=True
    ).stdout
    assert version == f"ldapdkim {ldapdkim.__version__}\n"
    for page in ("man8/ldapdkim.8", "man5/ldapdkim.conf.5"):
        installed = venv / "share" / "man" / page
        assert installed.read_text() == (ROOT / "man" / Path(page).name).read_text()
