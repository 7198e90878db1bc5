"""The Debian package: built with dpkg-buildpackage, installed with apt-get, run behind Postfix.

The package is built from a copy of this checkout (the build writes next to
its source), installed on this machine with ``apt-get install ./...deb``
(its dependencies are Debian's own python3-* packages), checked file by
file, and then the installed ``/usr/bin/ldapdkim`` signs a message behind
the test Postfix that Mail::DKIM verifies.  The package is purged at the end
(the ``ldapdkim`` user stays, as Debian leaves system users).

Needs root: it installs a package.  A machine where ldapdkim is already
installed is left alone (skipped; a failure in CI).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.common import skip_or_fail
from harness.dnsserver import DnsServer
from harness.mailsite import MailSite, message
from harness.milterproc import MilterProcess
from harness.postfix import Postfix, require_postfix
from harness.slapd import Slapd
from harness.verifiers import mail_dkim_verify, require_mail_dkim

import ldapdkim

ROOT = Path(__file__).resolve().parents[2]
VERSION = ldapdkim.__version__
# Debian's tools and Python first: another python3 on PATH (pyenv, say) would
# build against libraries the package does not depend on.
DEBIAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
PROGRAM = "/usr/bin/ldapdkim"


def _run(
    *argv: str, cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": DEBIAN_PATH, "DEBIAN_FRONTEND": "noninteractive"}
    run = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if check and run.returncode != 0:
        pytest.fail(
            f"{' '.join(argv)} exited {run.returncode}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
        )
    return run


def _installed_version() -> str | None:
    run = _run("dpkg-query", "-W", "-f=${Status} ${Version}", "ldapdkim", check=False)
    if run.returncode != 0 or not run.stdout.startswith("install ok installed"):
        return None
    return run.stdout.split()[-1]


def _source_tree(target: Path) -> None:
    """This checkout's files (committed or not, ignored ones left out) under ``target``."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = ROOT / name
        if name.startswith("tests/.cache/") or (not source.exists() and not source.is_symlink()):
            continue
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            destination.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, destination)


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The built package, installed; purged after the module's tests."""
    if os.geteuid() != 0:
        skip_or_fail("installing the Debian package needs root")
    for tool in ("dpkg-buildpackage", "dh", "apt-get"):
        if shutil.which(tool, path=DEBIAN_PATH) is None:
            skip_or_fail(f"{tool} is missing; run tests/setup.sh")
    if _installed_version() is not None:
        skip_or_fail("ldapdkim is installed on this machine already; the test would replace it")
    work = tmp_path_factory.mktemp("deb")
    source = work / "ldapdkim"
    _source_tree(source)
    _run("dpkg-buildpackage", "-us", "-uc", "-b", cwd=source)
    built = work / f"ldapdkim_{VERSION}_all.deb"
    assert built.is_file(), sorted(p.name for p in work.iterdir())
    _run("apt-get", "install", "-y", "-q", "--no-install-recommends", str(built))
    try:
        yield built
    finally:
        _run("apt-get", "purge", "-y", "-q", "ldapdkim", check=False)


def test_the_package_is_ldapdkim_for_all_architectures_on_debians_python_libraries(
    deb: Path,
) -> None:
    fields = dict(
        line.split(": ", 1)
        for line in _run(
            "dpkg-deb", "-f", str(deb), "Package", "Version", "Architecture", "Depends"
        ).stdout.splitlines()
    )
    assert (fields["Package"], fields["Version"], fields["Architecture"]) == (
        "ldapdkim",
        VERSION,
        "all",
    )
    depends = set(re.findall(r"python3-[a-z-]+", fields["Depends"]))
    assert {
        "python3-ldap", "python3-milter", "python3-cryptography",
        "python3-dnspython", "python3-cachetools", "python3-authres",
        "python3-prometheus-client", "python3-idna",
    } <= depends  # fmt: skip
    # dkimpy and PyNaCl are the tests' independent oracles, not the milter's.
    assert not {"python3-dkim", "python3-nacl"} & depends
    # A domain entry may ask for organizational alignment (dkimSignSenderAlignment)
    # whatever the configuration file says, so the list must always be there.
    assert "publicsuffix" in re.split(r"[,\s]+", fields["Depends"])
    assert _installed_version() == VERSION


def test_it_installs_program_configuration_schema_unit_manuals_and_a_user(deb: Path) -> None:
    for path in (
        PROGRAM,
        "/etc/ldapdkim/ldapdkim.conf",
        "/usr/share/ldapdkim/schema/ldapdkim.ldif",
        "/usr/share/ldapdkim/schema/ldapdkim.schema",
        "/usr/share/ldapdkim/schema/389ds/99ldapdkim.ldif",
        "/lib/systemd/system/ldapdkim.service",
        "/usr/lib/sysusers.d/ldapdkim.conf",
        "/usr/share/doc/ldapdkim/changelog.gz",
        "/usr/share/doc/ldapdkim/README.md",  # uncompressed: its links lead into docs/
        "/usr/share/doc/ldapdkim/docs/README.md",
        "/usr/share/doc/ldapdkim/docs/reference/configuration.md",
    ):
        assert Path(path).exists(), path
    conffiles = _run("dpkg-query", "-W", "-f=${Conffiles}", "ldapdkim").stdout
    assert "/etc/ldapdkim/ldapdkim.conf" in conffiles
    assert Path(PROGRAM).read_text().startswith("#!/usr/bin/python3\n")
    assert _run(PROGRAM, "-V").stdout == f"ldapdkim {VERSION}\n"
    for page in ("8 ldapdkim", "5 ldapdkim.conf"):
        assert _run("man", "-w", *page.split()).stdout.strip().endswith(".gz"), page
    user = _run("getent", "passwd", "ldapdkim").stdout
    assert user.split(":")[5:] == ["/var/lib/ldapdkim", "/usr/sbin/nologin\n"]
    if _run("getent", "passwd", "postfix", check=False).returncode == 0:
        assert "ldapdkim" in _run("id", "-nG", "postfix").stdout.split()


def test_systemd_accepts_the_installed_unit(deb: Path) -> None:
    run = _run("systemd-analyze", "verify", "/lib/systemd/system/ldapdkim.service", check=False)
    assert run.returncode == 0, run.stderr


def test_the_fresh_configuration_names_what_to_fill_in(deb: Path) -> None:
    """The shipped file is a sample: check-config says which line needs the site's data."""
    run = _run(PROGRAM, "check-config", "-c", "/etc/ldapdkim/ldapdkim.conf", check=False)
    assert run.returncode == 2
    assert run.stderr.startswith("ldapdkim: /etc/ldapdkim/ldapdkim.conf:"), run.stderr
    assert "/etc/ldapdkim/bindpw" in run.stderr


def test_the_installed_program_signs_behind_postfix_as_the_ldapdkim_user(
    deb: Path, slapd: Slapd, ldap_base: str, tmp_path: Path
) -> None:
    """As the unit runs it: user ldapdkim, no capabilities, no new privileges."""
    require_postfix()
    require_mail_dkim()
    ldapdkim_user = pwd.getpwnam("ldapdkim")
    # Readable by ldapdkim: its configuration and StateDirectory (pytest's are root's, 0700).
    home = Path(tempfile.mkdtemp(prefix="ldapdkim-package-"))
    home.chmod(0o755)
    state = home / "state"
    state.mkdir(mode=0o700)
    os.chown(state, ldapdkim_user.pw_uid, ldapdkim_user.pw_gid)
    (home / "milter").mkdir()
    (home / "milter").chmod(0o755)  # its configuration file is read as ldapdkim
    unit_like = [
        "setpriv", "--reuid=ldapdkim", "--regid=ldapdkim", "--clear-groups",
        "--no-new-privs", "--bounding-set=-all", "--inh-caps=-all", PROGRAM,
    ]  # fmt: skip
    try:
        with DnsServer() as dns, Postfix(tmp_path / "postfix") as postfix:
            site = MailSite(slapd, ldap_base, dns, tmp_path)
            site.add_domains(["example.com"], "rsa-sha256")
            lines = site.milter_config("DirectorySync yes", f"StateDirectory {state}")
            with MilterProcess(home / "milter", lines, program=unit_like) as milter:
                postfix.set_milter(milter.postfix_address)
                postfix.reload()
                reply = postfix.send(
                    message(subject="from the package"),
                    mail_from="alice@example.com",
                    rcpt_to=["bob@example.net"],
                )
                assert reply.accepted, (reply, milter.log())
                delivered = postfix.wait_for_message("from the package")
                assert milter.process is not None
                pid = milter.process.pid
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                # Debian's Python running the installed script (its imports: dist-packages).
                assert argv[:2] == [b"/usr/bin/python3", PROGRAM.encode()], argv
                assert Path(f"/proc/{pid}").stat().st_uid == ldapdkim_user.pw_uid
            verdicts = mail_dkim_verify(delivered, dns.port)
        assert [(v.result, v.domain) for v in verdicts] == [("pass", "example.com")], milter.log()
        # The replica it saved as ldapdkim holds private keys: its own, 0600.
        saved = [p for p in state.iterdir() if p.is_file() and p.name != "status.json"]
        assert saved, milter.log()
        for path in saved:
            info = path.stat()
            assert (info.st_uid, info.st_mode & 0o777) == (ldapdkim_user.pw_uid, 0o600), path
    finally:
        shutil.rmtree(home, ignore_errors=True)
