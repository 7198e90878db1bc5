"""``ldapdkim status`` against a running milter and the status.json it writes.

Rendering and every exit status are unit-tested with hand-written files
(``tests/unit/test_status.py``); this checks that the command understands
what the daemon really writes, as the directory comes and goes.

In lookup mode (``DirectorySync no``) a server counts as connected while the
milter holds a lookup connection to it, and that connection is made and
found broken only by lookups; so the test sends a message (with
``harness/milterload.py``) before each look, in both modes alike.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import milterload
from harness.common import wait_until_ready
from harness.dnsserver import DnsServer
from harness.mailsite import MailSite
from harness.milterproc import MilterProcess
from harness.provisioning import run_cli
from harness.slapd import SLAPD_BINARIES, Slapd, require_binaries


@dataclass
class Running:
    slapd: Slapd
    milter: MilterProcess
    state: Path

    def status(self, *options: str) -> tuple[int, str, str]:
        code, out, err = run_cli("status", "-c", str(self.milter.config_path), *options)
        return code, out.decode(), err

    def send_one(self) -> None:
        """One message through the milter (signed or not: only the lookup matters)."""
        options = milterload.LoadOptions(
            socket=self.milter.socket, count=1, timeout=10.0, require_signature=False
        )
        assert milterload.run_load(options).messages == 1

    def wait_for(self, code: int, timeout: float = 15.0) -> str:
        """Poll ``ldapdkim status`` until it exits with *code*; return its output."""
        last = (0, "", "")

        def exits_with_code() -> bool:
            nonlocal last
            self.send_one()
            last = self.status()
            return last[0] == code

        def said() -> str:
            got, out, err = last
            return f"the last time it exited {got}:\n{out}{err}\n{self.milter.log()}"

        wait_until_ready(
            "ldapdkim status",
            f"exiting {code}",
            exits_with_code,
            timeout=timeout,
            log=said,
            error=AssertionError,
            interval=0.1,
            max_interval=0.1,
        )
        return last[1]


@pytest.fixture(params=["yes", "no"], ids=["sync", "lookup"])
def running(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Running]:
    require_binaries(*SLAPD_BINARIES)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    with Slapd(tmp_path / "slapd") as slapd, DnsServer() as dns:
        site = MailSite(slapd, slapd.domains_base, dns, tmp_path)
        site.add_domains(["example.com"], "ed25519-sha256")
        lines = site.milter_config(
            f"DirectorySync {request.param}",
            f"StateDirectory {state}",
            "LDAPTimeout 1",
            "LDAPCacheTTL 0",  # lookup mode: every message asks the server
        )
        with MilterProcess(tmp_path / "milter", lines) as milter:
            yield Running(slapd, milter, state)


def test_status_follows_the_directory(running: Running) -> None:
    out = running.wait_for(0)
    assert re.search(rf"^{re.escape(running.slapd.ldap_uri)}\s+connected\b", out, re.M), out
    assert out.endswith("OK: 1 of 1 directory servers connected\n"), out

    code, raw, _ = running.status("--json")
    assert code == 0
    document = json.loads(raw)
    assert [s["uri"] for s in document["servers"]] == [running.slapd.ldap_uri]
    assert document["mode"] in ("sync", "lookup")

    running.slapd.stop()
    out = running.wait_for(1)
    assert "disconnected" in out, out
    assert out.endswith("PROBLEM: none of 1 directory servers is connected\n"), out


def test_without_the_file_status_exits_2_with_a_hint(running: Running) -> None:
    running.wait_for(0)
    running.milter.stop()
    (running.state / "status.json").unlink(missing_ok=True)
    code, out, err = running.status()
    assert (code, out) == (2, "")
    assert "is the milter running? StateDirectory is " + str(running.state) in err
