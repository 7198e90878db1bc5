"""TSIG key files, server and zone arguments, and ``dns-records`` option errors.

Sending updates to a real server is in ``tests/integration/test_dns_update.py``.
"""

from __future__ import annotations

import doctest
import socket
from pathlib import Path

import pytest

from ldapdkim import cli
from ldapdkim.errors import ConfigError
from ldapdkim.publish import dnsupdate
from ldapdkim.publish.dnsupdate import (
    Server,
    parse_server,
    parse_tsig_key,
    parse_zone,
    read_tsig_key_file,
)

REPO = Path(__file__).resolve().parents[2]
SECRET = "R3HI8P6BKw9ZwXwN3VZKuQhYr0XM9lsFBVcFvdxH/TM="
TSIG_KEYGEN_OUTPUT = (
    f'key "ldapdkim-update" {{\n\talgorithm hmac-sha256;\n\tsecret "{SECRET}";\n}};\n'
)


def test_the_examples_in_the_docstring_hold() -> None:
    assert doctest.testmod(dnsupdate).failed == 0


def test_a_key_file_as_tsig_keygen_writes_it_is_read() -> None:
    key = parse_tsig_key(TSIG_KEYGEN_OUTPUT, "update.key")

    assert (key.name, key.algorithm, key.source) == ("ldapdkim-update", "hmac-sha256", "update.key")
    assert key.secret_text == SECRET
    assert SECRET not in repr(key)


def test_comments_unquoted_names_and_upper_case_algorithms_are_accepted() -> None:
    text = (
        "# made for ldapdkim\n"
        "// BIND comment\n"
        "key upd.example. { /* block\ncomment */ algorithm HMAC-SHA512; secret "
        f'"{SECRET}"; }};\n'
    )

    key = parse_tsig_key(text, "k")

    assert (key.name, key.algorithm) == ("upd.example.", "hmac-sha512")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            f'key "k" {{ secret "{SECRET}"; }};',
            "f:1: key 'k' has no algorithm; write it as "
            'key "NAME" { algorithm hmac-sha256; secret "BASE64"; };',
        ),
        (
            'key "k" {\n algorithm hmac-sha256;\n};',
            "f:1: key 'k' has no secret; write it as "
            'key "NAME" { algorithm hmac-sha256; secret "BASE64"; };',
        ),
        (
            f'key "k" {{ algorithm hmac-sha3; secret "{SECRET}"; }};',
            "f:1: key 'k' has unknown TSIG algorithm 'hmac-sha3'; use one of hmac-sha256, "
            "hmac-sha384, hmac-sha512, hmac-sha224, hmac-sha1, hmac-md5",
        ),
        (
            'key "k" {\n algorithm hmac-sha256;\n secret "not*base64!";\n};',
            "f:3: the secret of key 'k' is not base64; copy it from tsig-keygen's output",
        ),
        (
            TSIG_KEYGEN_OUTPUT + TSIG_KEYGEN_OUTPUT.replace("ldapdkim-update", "other"),
            "f: holds 2 TSIG keys ('ldapdkim-update', 'other'); "
            "keep exactly the one that signs the updates",
        ),
        ("", "f: holds 0 TSIG keys; keep exactly the one that signs the updates"),
        (
            'key "k" { algorithm hmac-sha256; secret "' + SECRET + '" }',
            "f:1: expected ';' after the secret of key 'k'; write it as "
            'key "NAME" { algorithm hmac-sha256; secret "BASE64"; };',
        ),
    ],
    ids=[
        "no-algorithm",
        "no-secret",
        "unknown-algorithm",
        "bad-base64",
        "two-keys",
        "empty",
        "missing-semicolon",
    ],
)
def test_a_bad_key_file_says_where_and_how_to_fix_it(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_tsig_key(text, "f")

    assert str(caught.value) == message


def test_an_unquoted_secret_is_refused_without_being_shown() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_tsig_key(f'key "k" {{ algorithm hmac-sha256; secret {SECRET}; }};', "f")

    assert SECRET not in str(caught.value)
    assert SECRET[:8] not in str(caught.value)
    assert "expected the quoted secret of key 'k'" in str(caught.value)


def test_a_missing_key_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.key: cannot read the TSIG key file: No such"):
        read_tsig_key_file(tmp_path / "absent.key")


@pytest.mark.parametrize(
    ("text", "server"),
    [
        ("192.0.2.1", Server("192.0.2.1", 53)),
        ("192.0.2.1:5353", Server("192.0.2.1", 5353)),
        ("ns1.example.com.", Server("ns1.example.com", 53)),
        ("ns1.example.com:53", Server("ns1.example.com", 53)),
        ("2001:db8::1", Server("2001:db8::1", 53)),
        ("[2001:db8::1]:5353", Server("2001:db8::1", 5353)),
    ],
)
def test_server_forms(text: str, server: Server) -> None:
    assert parse_server(text) == server


@pytest.mark.parametrize("text", ["192.0.2.1:0", "ns1:99999", "ns1:x", "bad host", "[::1]:"])
def test_bad_servers_are_refused_with_the_forms(text: str) -> None:
    with pytest.raises(ValueError, match="use HOST, HOST:PORT, IPv6 or"):
        parse_server(text)


def test_zone_names_may_hold_underscores_but_not_spaces() -> None:
    assert parse_zone("_domainkey.Example.com") == "_domainkey.example.com."
    with pytest.raises(ValueError, match="is not a DNS name"):
        parse_zone("example com")


# -- the command ------------------------------------------------------------------


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "update.key"
    path.write_text(TSIG_KEYGEN_OUTPUT)
    path.chmod(0o600)  # as tsig-keygen users keep it; RequireSafeKeys checks
    return path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--apply"], "--apply needs --server HOST[:PORT], the primary server of the zones"),
        (
            ["--apply", "--server", "127.0.0.1"],
            "--apply needs --tsig-key-file FILE: updates are signed with TSIG (RFC 8945); "
            "make a key with tsig-keygen and allow it on the server",
        ),
        (
            ["--apply", "--format", "nsupdate"],
            "--apply sends the records instead of printing them; leave out --format",
        ),
        (
            ["--format", "nsupdate", "--tsig-key-file", "k"],
            "--tsig-key-file goes with --apply; for nsupdate, give the key file to nsupdate -k",
        ),
        (["--server", "127.0.0.1"], "--server and --zone go with --format nsupdate or --apply"),
        (
            ["--format", "nsupdate", "--zone", "example.com"],
            "not in zone example.com.: _adsp._domainkey.example.org. and 1 more; "
            "leave out --zone to find each domain's zone",
        ),
        (
            ["--format", "nsupdate", "--server", "ns1:99999"],
            "--server: server 'ns1:99999' has a bad port; use HOST, HOST:PORT, IPv6 or "
            "[IPv6]:PORT, e.g. ns1.example.com:53",
        ),
    ],
    ids=[
        "apply-no-server",
        "apply-no-key",
        "apply-and-format",
        "key-without-apply",
        "server-with-zone-format",
        "names-outside-zone",
        "bad-port",
    ],
)
def test_option_mistakes_exit_2_with_one_line(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(REPO)

    status = cli.main(["dns-records", "-c", "conf/quickstart.conf", "--adsp", "all", *argv])

    assert status == 2
    assert capsys.readouterr().err == f"ldapdkim: {message}\n"


def test_an_unreachable_server_exits_1_and_never_shows_the_secret(
    key_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    with socket.socket() as sock:  # a port that nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

        status = cli.main(
            [
                "dns-records",
                "-c",
                "conf/quickstart.conf",
                "--apply",
                "--server",
                f"127.0.0.1:{port}",
                "--tsig-key-file",
                str(key_file),
            ]
        )

    captured = capsys.readouterr()
    assert status == 1
    assert captured.out == ""
    assert captured.err == (
        f"ldapdkim: cannot reach 127.0.0.1:{port} over TCP: Connection refused; "
        "check --server and that the server is up\n"
    )


def test_a_bad_key_file_exits_2_before_the_directory_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    bad = tmp_path / "bad.key"
    bad.write_text(TSIG_KEYGEN_OUTPUT.replace("hmac-sha256", "hmac-sha999"))
    bad.chmod(0o600)

    status = cli.main(
        [
            "dns-records",
            "-c",
            "conf/quickstart.conf",
            "--apply",
            "--server",
            "127.0.0.1",
            "--tsig-key-file",
            str(bad),
        ]
    )

    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith(f"ldapdkim: {bad}:2: key 'ldapdkim-update' has unknown TSIG algorithm")
    assert SECRET not in err


def test_a_tsig_key_file_others_can_read_is_refused(
    key_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    key_file.chmod(0o644)
    argv = ["dns-records", "-c", "conf/quickstart.conf", "--apply", "--server", "127.0.0.1"]
    assert cli.main([*argv, "--tsig-key-file", str(key_file)]) == 2
    assert capsys.readouterr().err == (
        f"ldapdkim: --tsig-key-file {key_file} is readable by group or others (mode 0644); "
        f"chmod 600 {key_file} and let root or the user ldapdkim starts as own it, "
        "or set RequireSafeKeys no\n"
    )
