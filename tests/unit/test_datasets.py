"""OpenDKIM data sets and `Keyword value` lines: one reading for config, host lists, migrate."""

from __future__ import annotations

from pathlib import Path

import pytest

from ldapdkim.config.datasets import (
    KINDS,
    dataset_kind,
    dataset_prefix,
    keyword_lines,
    read_dataset,
)


def test_keyword_lines_skip_comments_and_blank_lines_and_split_at_the_first_blank() -> None:
    text = "# a comment\n\nMode\tsv  # trailing\n  Socket inet:8891@127.0.0.1\nKeyFile\n"
    assert list(keyword_lines(text)) == [
        (3, "Mode", "sv"),
        (4, "Socket", "inet:8891@127.0.0.1"),
        (5, "KeyFile", ""),
    ]


@pytest.mark.parametrize(
    ("value", "kind", "rest"),
    [
        ("file:/etc/list", "file", "/etc/list"),
        ("REFILE:/etc/patterns", "refile", "/etc/patterns"),
        ("csl:a, b", "csl", "a, b"),
        ("/etc/list", "file", "/etc/list"),
        ("/etc/keys.db", "db", "/etc/keys.db"),
        ("db:/etc/keys", "db", "/etc/keys"),
        ("ldap://ldap.example.com/dc=example", "ldap", "//ldap.example.com/dc=example"),
        ("127.0.0.1, ::1", "csl", "127.0.0.1, ::1"),
        ("db::1", "csl", "db::1"),  # an IPv6 address, not a database
        ("abcd:ef::1", "csl", "abcd:ef::1"),  # hex letters first: still an address
        ("a=b, c:d", "csl", "a=b, c:d"),  # the comma comes first: no prefix
    ],
)
def test_the_kind_of_a_data_set_follows_opendkim(value: str, kind: str, rest: str) -> None:
    assert dataset_kind(value) == (kind, rest)


def test_an_unknown_prefix_is_seen_and_left_for_the_caller_to_refuse() -> None:
    assert dataset_prefix("k=example.com:s1:/x") == "k=example.com"
    assert dataset_prefix("k=example.com:s1:/x") not in KINDS
    assert dataset_kind("k=example.com:s1:/x")[0] == "csl"


def test_a_berkeley_db_path_is_refused_as_a_database_not_read_as_text(tmp_path: Path) -> None:
    path = tmp_path / "hosts.db"
    path.write_text("192.0.2.1\n")
    with pytest.raises(ValueError, match="'db:' is not supported"):
        read_dataset(str(path))


def test_a_list_file_names_the_line_of_each_entry(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text("# internal\n192.0.2.1\n\n.example.com  # and below\n")
    entries = read_dataset(f"file:{path}")
    assert [(e.text, e.where) for e in entries] == [
        ("192.0.2.1", f" ({path} line 2)"),
        (".example.com", f" ({path} line 4)"),
    ]
