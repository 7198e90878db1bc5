"""The configuration files shipped in conf/ load, and the commented sample stays complete.

Run from the top of the source tree, as the quick start is (relative paths in
conf/quickstart.conf are taken from there).  conf/ldapdkim.conf names files
that exist only on a real server (/etc/ldapdkim/...); the tests put stand-ins
in a temporary directory and point the sample at them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ldapdkim.config.directorysource import DirectorySource
from ldapdkim.config.keywords import keyword_reference
from ldapdkim.config.settings import Settings, load, parse
from ldapdkim.model import Canonicalization

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
SAMPLE = CONF / "ldapdkim.conf"

# A commented-out setting is "#Keyword value", no blank after '#'; prose is "# text".
COMMENTED_SETTING = re.compile(r"^#([A-Za-z][\w-]*)([ \t]+.*)$", re.MULTILINE)
SERVER_FILE = re.compile(r"/etc/ldapdkim/[\w./-]+")

# Commented lines that are alternatives to active ones, not additions to them.
ALTERNATIVES = {"Domain", "Selector", "KeyFile", "LDAPBindPassword"}


@pytest.fixture(autouse=True)
def at_repository_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def with_stand_ins(text: str, tmp_path: Path) -> str:
    """``text`` with every /etc/ldapdkim/... file replaced by a temporary stand-in."""

    def stand_in(match: re.Match[str]) -> str:
        path = tmp_path / match.group(0).removeprefix("/etc/ldapdkim/")
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.name.startswith("kek"):
            path.write_bytes(bytes(range(32)))  # a key-encryption key is 32 bytes
        else:
            path.write_text("sample-bind-password\n" if path.name == "bindpw" else "# stand-in\n")
        path.chmod(0o600)  # RequireSafeKeys, as the sample says
        return str(path)

    return SERVER_FILE.sub(stand_in, text)


def load_sample(text: str, tmp_path: Path) -> Settings:
    return parse(with_stand_ins(text, tmp_path), str(SAMPLE))


def enable(text: str, keywords: set[str]) -> str:
    """Remove the '#' before the commented settings of ``keywords``."""
    return COMMENTED_SETTING.sub(
        lambda m: m.group(1) + m.group(2) if m.group(1) in keywords else m.group(0), text
    )


def active_keywords(text: str) -> set[str]:
    return {line.split()[0] for line in text.splitlines() if line[:1].isalpha()}


def commented_keywords(text: str) -> set[str]:
    known = {name for name, _, _ in keyword_reference()}
    return {m.group(1) for m in COMMENTED_SETTING.finditer(text) if m.group(1) in known}


@pytest.mark.parametrize("path", sorted(CONF.glob("*.conf")), ids=lambda p: p.name)
def test_every_shipped_configuration_loads(path: Path, tmp_path: Path) -> None:
    settings = load_sample(path.read_text(), tmp_path) if path == SAMPLE else load(path)
    assert settings.signs


def test_quick_start_reads_the_example_ldif() -> None:
    settings = load("conf/quickstart.conf")
    assert settings.mode == "sv"
    assert settings.socket == "inet:8891@127.0.0.1"
    assert settings.directory == DirectorySource(
        kind="ldif", ldif_path=ROOT / "conf" / "example.ldif"
    )
    assert settings.canonicalization == Canonicalization("relaxed", "simple")
    assert settings.internal_hosts.entries == ("127.0.0.1", "::1")
    assert (settings.syslog, settings.log_why) == (False, True)


def test_sample_binds_to_two_ldap_servers_with_a_password_file(tmp_path: Path) -> None:
    settings = load_sample(SAMPLE.read_text(), tmp_path)
    assert settings.directory is not None
    assert settings.directory.uris == (
        "ldap://ldap1.example.com:389",
        "ldap://ldap2.example.com:389",
    )
    assert settings.directory.base_dn == "ou=dkim,dc=example,dc=com"
    assert settings.ldap_bind_user == "cn=ldapdkim,ou=services,dc=example,dc=com"
    assert settings.ldap_bind_password is not None
    assert settings.ldap_bind_password.reveal() == "sample-bind-password"


def test_sample_names_every_keyword() -> None:
    text = SAMPLE.read_text()
    named = active_keywords(text) | commented_keywords(text)
    missing = [name for name, _, _ in keyword_reference() if name not in named]
    assert not missing, f"add these keywords to conf/ldapdkim.conf: {missing}"


def test_sample_gives_each_setting_one_comment_line() -> None:
    lines = SAMPLE.read_text().splitlines()
    for number, line in enumerate(lines):
        if line[:1].isalpha() or COMMENTED_SETTING.match(line):
            above = lines[number - 1]
            assert above.startswith("# "), f"line {number + 1} {line.split()[0]}: no comment above"


def test_sample_with_every_optional_setting_enabled_loads(tmp_path: Path) -> None:
    text = SAMPLE.read_text()
    optional = commented_keywords(text) - active_keywords(text) - ALTERNATIVES
    load_sample(enable(text, optional), tmp_path)


def test_sample_single_key_alternative_loads(tmp_path: Path) -> None:
    text = enable(SAMPLE.read_text(), {"Domain", "Selector", "KeyFile"})
    text = re.sub(r"^(Directory|LDAPBind\w+)\b", r"#\1", text, flags=re.MULTILINE)
    settings = load_sample(text, tmp_path)
    assert settings.directory is None
    assert settings.domain and settings.selector and settings.key_file


def test_sample_bind_password_alternative_loads(tmp_path: Path) -> None:
    text = enable(SAMPLE.read_text(), {"LDAPBindPassword"})
    text = re.sub(r"^LDAPBindPasswordFile\b", "#LDAPBindPasswordFile", text, flags=re.MULTILINE)
    assert load_sample(text, tmp_path).ldap_bind_password is not None
