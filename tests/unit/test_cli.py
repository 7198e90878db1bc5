"""The ``ldapdkim`` command: exit status, exact messages, files it writes.

These use the LDIF backend (no server); the same commands against slapd are
in ``tests/integration``.
"""

from __future__ import annotations

import argparse
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ldapdkim import cli
from ldapdkim.cli.main import build_parser
from ldapdkim.directory import ldifout
from ldapdkim.keys import load_private_key

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)


def test_check_config_accepts_the_quickstart(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-config", "-c", "conf/quickstart.conf"]) == 0
    assert capsys.readouterr().out == "conf/quickstart.conf: OK\n"


def test_check_config_names_file_line_and_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "bad.conf"
    conf.write_text("Mode sv\nDirectory ldif:conf/example.ldif\nLDAPBindPasword x\n")
    assert cli.main(["check-config", "-c", str(conf)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ldapdkim: {conf}:3: unknown keyword 'LDAPBindPasword'")
    assert "did you mean 'LDAPBindPassword'?" in err
    assert err.count("\n") == 1


def test_check_config_names_the_missing_public_suffix_list_and_its_package(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "org.conf"
    missing = tmp_path / "public_suffix_list.dat"
    conf.write_text(
        "Mode s\nDirectory ldif:conf/example.ldif\nSenderAlignment organizational\n"
        f"PublicSuffixList {missing}\n"
    )
    assert cli.main(["check-config", "-c", str(conf)]) == 2
    assert capsys.readouterr().err == (
        f"ldapdkim: {conf}: SenderAlignment organizational needs PublicSuffixList {missing}: "
        "No such file or directory; Debian's publicsuffix package provides "
        "/usr/share/publicsuffix/public_suffix_list.dat (apt-get install publicsuffix), "
        "or set PublicSuffixList to a copy\n"
    )
    missing.write_text("com\n")
    assert cli.main(["check-config", "-c", str(conf)]) == 0
    assert capsys.readouterr().out == f"{conf}: OK\n"


def test_missing_config_file_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-config", "-c", "/nonexistent/ldapdkim.conf"]) == 2
    assert "/nonexistent/ldapdkim.conf" in capsys.readouterr().err


def test_genkey_prints_ldif_and_writes_txt_and_a_private_pem_readable_by_owner_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    txt, pem = tmp_path / "k.zone", tmp_path / "k.pem"
    status = cli.main(
        [
            "genkey",
            "-d",
            "Example.COM",
            "-s",
            "s1",
            "--base",
            "ou=domains,dc=example,dc=com",
            "--with-domain",
            "--txt",
            str(txt),
            "--private",
            str(pem),
        ]
    )
    assert status == 0
    records = ldifout.parse(capsys.readouterr().out)
    assert [dn for dn, _ in records] == [
        "ou=example.com,ou=domains,dc=example,dc=com",
        "dkimSignSelector=s1,ou=example.com,ou=domains,dc=example,dc=com",
    ]
    key_attrs = records[1][1]
    assert key_attrs["dkimSignKeyState"] == [b"active"]
    assert load_private_key(key_attrs["dkimSignPrivateKey"][0], where="test").key_size == 2048  # type: ignore[union-attr]
    assert txt.read_text().startswith('s1._domainkey.example.com. IN TXT "v=DKIM1; k=rsa; p=')
    assert stat.S_IMODE(os.stat(pem).st_mode) == 0o600
    assert pem.read_bytes() == key_attrs["dkimSignPrivateKey"][0]


def test_genkey_writes_no_private_key_file_unless_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert (
        cli.main(
            [
                "genkey",
                "-d",
                "example.com",
                "-s",
                "e1",
                "-a",
                "ed25519-sha256",
                "--base",
                "dc=example,dc=com",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert list(tmp_path.iterdir()) == []
    assert captured.err.startswith('e1._domainkey.example.com. IN TXT "v=DKIM1; k=ed25519; p=')


def test_genkey_refuses_rsa_below_1024_bits(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        cli.main(
            ["genkey", "-d", "example.com", "-s", "s1", "-b", "512", "--base", "dc=example,dc=com"]
        )
        == 2
    )
    assert capsys.readouterr().err == (
        "ldapdkim: RSA keys of 512 bits are refused; use at least 1024 (RFC 8301), "
        "2048 is the default\n"
    )


@pytest.mark.parametrize("domain", ["*", "example.com,ou=x", "a..b"])
def test_genkey_refuses_a_domain_that_is_not_a_host_name(
    domain: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["genkey", "-d", domain, "-s", "s1", "--base", "dc=example,dc=com"]) == 2
    assert "ldapdkim: domain" in capsys.readouterr().err


def test_provision_writes_a_domain_and_a_key_per_algorithm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listing = tmp_path / "domains.txt"
    listing.write_text("# customers\nexample.com\nExample.COM\nbücher.example\n\nexample.org\n")
    out, txt = tmp_path / "out.ldif", tmp_path / "out.zone"
    status = cli.main(
        [
            "provision",
            "--base",
            "ou=domains,dc=example,dc=com",
            "--domains",
            str(listing),
            "-a",
            "rsa-sha256",
            "-a",
            "ed25519-sha256",
            "-s",
            "k2026",
            "-o",
            str(out),
            "--txt",
            str(txt),
            "-j",
            "2",
        ]
    )
    assert status == 0
    dns = [dn for dn, _ in ldifout.parse(out.read_text())]
    assert len(dns) == 9
    assert dns[:3] == [
        "ou=example.com,ou=domains,dc=example,dc=com",
        "dkimSignSelector=k2026-rsa,ou=example.com,ou=domains,dc=example,dc=com",
        "dkimSignSelector=k2026-ed25519,ou=example.com,ou=domains,dc=example,dc=com",
    ]
    assert "ou=xn--bcher-kva.example,ou=domains,dc=example,dc=com" in dns
    assert len(txt.read_text().splitlines()) == 6
    assert "provisioned 3 domains (6 keys) in" in capsys.readouterr().err


def test_provision_names_the_line_of_a_bad_domain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listing = tmp_path / "domains.txt"
    listing.write_text("example.com\n*)(objectClass=*\n")
    assert cli.main(["provision", "--base", "dc=x", "--domains", str(listing)]) == 1
    assert f"{listing}:2: domain" in capsys.readouterr().err


def test_sign_with_the_embedded_default_gives_two_signatures(
    capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    message = (REPO / "conf" / "sample.eml").read_bytes()
    monkeypatch.setattr("sys.stdin", _Stdin(message))
    assert cli.main(["sign", "-c", "conf/quickstart.conf"]) == 0
    out = capsysbinary.readouterr().out
    assert out.endswith(message)
    assert out.count(b"DKIM-Signature:") == 2
    assert b"\r\n" not in out  # an LF message stays LF


def test_mode_v_does_not_sign(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "v.conf"
    conf.write_text("Mode v\nDirectory ldif:conf/example.ldif\n")
    monkeypatch.setattr("sys.stdin", _Stdin((REPO / "conf" / "sample.eml").read_bytes()))
    assert cli.main(["sign", "-c", str(conf)]) == 1
    assert "not signed: Mode v does not sign" in capsys.readouterr().err


class _Stdin:
    def __init__(self, data: bytes) -> None:
        import io

        self.buffer = io.BytesIO(data)


def test_dash_capital_v_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["-V"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("ldapdkim ")


@pytest.mark.parametrize("command", ["genkey -d example.com -s s1", "provision --domains -"])
def test_a_base_that_is_not_a_dn_is_a_usage_error_without_a_traceback(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([*command.split(), "--base", "not a dn"]) == 2
    assert capsys.readouterr().err == (
        "ldapdkim: --base 'not a dn' is not a DN; write it like ou=domains,dc=example,dc=com\n"
    )


def test_every_command_a_message_names_exists() -> None:
    """Hints such as "run 'ldapdkim genkey'" must name a sub-command that is there."""
    parser = build_parser()
    [subcommands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    commands = set(subcommands.choices)
    package = Path(cli.__file__).resolve().parents[1]
    named = {
        word
        for path in package.rglob("*.py")
        for word in re.findall(r"['(`]ldapdkim ([a-z][a-z-]+)", path.read_text())
    }
    assert named and named <= commands, named - commands


def test_provision_output_is_created_0600_whatever_the_umask(tmp_path: Path) -> None:
    listing = tmp_path / "domains.txt"
    listing.write_text("example.com\n")
    out = tmp_path / "out.ldif"
    out.write_text("")
    out.chmod(0o644)  # there before, readable by everyone: made 0600 too
    umask = os.umask(0)
    try:
        argv = ["provision", "--base", "ou=d,dc=example,dc=com", "--domains", str(listing)]
        assert cli.main([*argv, "-a", "ed25519-sha256", "-o", str(out), "-j", "1"]) == 0
    finally:
        os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "dkimSignPrivateKey" in out.read_text()


def test_private_keys_for_a_terminal_are_warned_about(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    argv = ["genkey", "-d", "example.com", "-s", "s1", "-a", "ed25519-sha256"]
    assert cli.main([*argv, "--base", "ou=d,dc=example,dc=com"]) == 0
    assert "the LDIF entry holds private keys and goes to the terminal" in capsys.readouterr().err


def test_a_command_imports_its_own_module_and_not_the_others() -> None:
    """``ldapdkim run`` starts sooner for not loading what migrate or rotate need."""
    code = (
        "import sys\n"
        "from ldapdkim.cli.main import main\n"
        "try:\n"
        "    main(['run', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('ldapdkim.cli.')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert result.stdout.splitlines()[-1] == str(
        ["ldapdkim.cli.main", "ldapdkim.cli.options", "ldapdkim.cli.run"]
    )
    assert "usage: ldapdkim run" in result.stdout


def test_the_help_and_an_unknown_command_still_list_every_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        cli.main(["bogus"])
    err = capsys.readouterr().err
    assert "invalid choice: 'bogus'" in err and "'check-config'" in err and "'status'" in err
