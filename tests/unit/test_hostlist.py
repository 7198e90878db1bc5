"""HostList: which SMTP clients are in InternalHosts, PeerList, ExternalIgnoreList."""

from __future__ import annotations

from pathlib import Path

import pytest

from ldapdkim.config.datasets import read_dataset
from ldapdkim.config.hostlist import REMEMBERED_CLIENTS, HostList


def hosts(value: str, base: Path | None = None) -> HostList:
    return HostList.parse(value, base=base)


def bad_entry(value: str, base: Path | None = None) -> str:
    with pytest.raises(ValueError) as caught:
        HostList.parse(value, base=base)
    return str(caught.value)


# Reading the value -------------------------------------------------------------


def test_inline_entries_are_separated_by_commas_or_blanks() -> None:
    assert hosts("127.0.0.1, ::1 mail.example.com,.example.org").entries == (
        "127.0.0.1",
        "::1",
        "mail.example.com",
        ".example.org",
    )


def test_csl_prefix_is_an_inline_list_and_alone_the_empty_list() -> None:
    assert hosts("csl:192.0.2.1,192.0.2.2").entries == ("192.0.2.1", "192.0.2.2")
    assert not hosts("csl:")
    assert len(hosts("csl:")) == 0


def test_bool_is_true_when_not_empty() -> None:
    assert hosts("127.0.0.1")
    assert not HostList()


def test_repr_shows_the_entries() -> None:
    assert repr(hosts("127.0.0.1, !192.0.2.0/24")) == "HostList(['127.0.0.1', '!192.0.2.0/24'])"


def test_file_has_one_entry_per_line_with_comments(tmp_path: Path) -> None:
    (tmp_path / "internal").write_text(
        "# our networks\n192.0.2.0/24   # office\n\n!192.0.2.99\nmail.example.com\n"
    )
    assert hosts("file:internal", base=tmp_path).entries == (
        "192.0.2.0/24",
        "!192.0.2.99",
        "mail.example.com",
    )


def test_bare_absolute_path_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "peers").write_text("192.0.2.7\n")
    assert hosts(str(tmp_path / "peers")).entries == ("192.0.2.7",)


def test_relative_file_is_taken_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "peers").write_text("192.0.2.7\n")
    monkeypatch.chdir(tmp_path)
    assert hosts("file:peers").entries == ("192.0.2.7",)


def test_missing_file_names_the_path_and_the_fix(tmp_path: Path) -> None:
    assert bad_entry("file:/nonexistent/internal") == (
        "file '/nonexistent/internal' does not exist; "
        "create it with one entry per line, or fix the path"
    )
    assert bad_entry("file:internal", base=tmp_path) == (
        f"file 'internal' ({tmp_path}/internal) does not exist; "
        "create it with one entry per line, or fix the path"
    )


def test_a_bad_entry_in_a_file_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "internal").write_text("192.0.2.1\n\n192.0.2.300\n")
    message = bad_entry("file:internal", base=tmp_path)
    assert message.startswith(
        f"bad entry '192.0.2.300' ({tmp_path}/internal line 3): not an IP address or network; "
    )


def test_one_line_of_a_file_holds_one_entry(tmp_path: Path) -> None:
    (tmp_path / "internal").write_text("192.0.2.1 192.0.2.2\n")
    assert bad_entry("file:internal", base=tmp_path) == (
        f"bad entry '192.0.2.1 192.0.2.2' ({tmp_path}/internal line 1): "
        "one line holds several entries; put one entry per line"
    )


def test_database_data_sets_are_refused() -> None:
    assert bad_entry("db:/etc/opendkim/peers.db") == (
        "OpenDKIM data set type 'db:' is not supported by ldapdkim; "
        "use a comma list, csl:LIST, file:PATH, refile:PATH"
    )


def test_a_leading_ipv6_hextet_is_not_mistaken_for_a_data_set_type() -> None:
    assert hosts("db::1").matches("db::1")


def test_read_dataset_refuses_refile_where_patterns_mean_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^refile: \(wildcard patterns\) only applies to host"):
        read_dataset("refile:x", base=tmp_path)


# Addresses and networks ----------------------------------------------------------


def test_ipv4_address_matches_only_itself() -> None:
    internal = hosts("192.0.2.1")
    assert internal.matches("192.0.2.1")
    assert not internal.matches("192.0.2.2")


def test_ipv4_network() -> None:
    internal = hosts("192.0.2.0/24")
    assert internal.matches("192.0.2.200")
    assert not internal.matches("198.51.100.1")


def test_host_bits_of_a_network_are_masked_off_as_in_opendkim() -> None:
    internal = hosts("192.0.2.77/24")
    assert internal.entries == ("192.0.2.0/24",)
    assert internal.matches("192.0.2.1")


def test_ipv6_address_and_network() -> None:
    internal = hosts("::1, 2001:db8::/32")
    assert internal.matches("::1")
    assert internal.matches("2001:db8:1::25")
    assert internal.matches("2001:DB8::25")
    assert not internal.matches("2001:db9::1")


def test_ipv6_entries_are_shown_compressed_and_lowercase() -> None:
    assert hosts("2001:DB8:0:0::1").entries == ("2001:db8::1",)


def test_addresses_in_brackets_are_accepted_as_in_opendkim() -> None:
    internal = hosts("[192.0.2.1], [2001:db8::]/32")
    assert internal.entries == ("192.0.2.1", "2001:db8::/32")
    assert internal.matches("2001:db8::1")


def test_ipv4_mapped_client_address_matches_ipv4_entries() -> None:
    internal = hosts("127.0.0.1, 192.0.2.0/24")
    assert internal.matches("::ffff:127.0.0.1")
    assert internal.matches("::ffff:192.0.2.9")
    assert not internal.matches("::ffff:198.51.100.1")


def test_ipv4_mapped_entries_are_ipv4() -> None:
    internal = hosts("::ffff:192.0.2.1, ::ffff:198.51.100.0/120")
    assert internal.entries == ("192.0.2.1", "198.51.100.0/24")
    assert internal.matches("192.0.2.1")
    assert internal.matches("198.51.100.42")


def test_ipv4_and_ipv6_never_match_each_other() -> None:
    assert not hosts("0.0.0.0/0").matches("2001:db8::1")
    assert not hosts("::/0").matches("192.0.2.1")


def test_client_addresses_in_other_spellings() -> None:
    internal = hosts("2001:db8::1, 192.0.2.1")
    assert internal.matches("[192.0.2.1]")
    assert internal.matches("IPv6:2001:db8::1")
    assert internal.matches("[2001:db8::1]")


def test_absent_or_unparsable_client_address_matches_no_address_entry() -> None:
    internal = hosts("0.0.0.0/0, ::/0")
    assert not internal.matches(None)
    assert not internal.matches("")
    assert not internal.matches("not an address")


# Names ---------------------------------------------------------------------------


def test_host_name_matches_exactly_and_case_insensitively() -> None:
    internal = hosts("Mail.Example.COM")
    assert internal.entries == ("mail.example.com",)
    assert internal.matches(None, "mail.example.com")
    assert internal.matches("192.0.2.1", "MAIL.example.com.")
    assert not internal.matches(None, "smtp.mail.example.com")
    assert not internal.matches(None, "example.com")


def test_leading_dot_matches_every_subdomain_but_not_the_domain() -> None:
    internal = hosts(".example.com")
    assert internal.matches(None, "a.example.com")
    assert internal.matches(None, "a.b.example.com")
    assert not internal.matches(None, "example.com")
    assert not internal.matches(None, "badexample.com")


def test_unresolved_client_name_in_brackets_is_no_name() -> None:
    assert not hosts("192.0.2.1.example.com").matches(None, "[192.0.2.1]")
    assert hosts("192.0.2.1").matches("192.0.2.1", "[192.0.2.1]")


def test_a_name_entry_matches_when_either_the_name_or_the_address_does() -> None:
    internal = hosts("192.0.2.1, relay.example.net")
    assert internal.matches("198.51.100.1", "relay.example.net")
    assert internal.matches("192.0.2.1", "other.example.net")
    assert not internal.matches("198.51.100.1", "other.example.net")


def test_international_names_become_a_labels() -> None:
    assert hosts("mail.bücher.example").entries == ("mail.xn--bcher-kva.example",)


# Negation ------------------------------------------------------------------------


def test_negated_entry_excludes_from_a_network() -> None:
    internal = hosts("192.0.2.0/24, !192.0.2.99")
    assert internal.matches("192.0.2.1")
    assert not internal.matches("192.0.2.99")


def test_the_most_specific_address_entry_decides_as_in_opendkim() -> None:
    """opendkim.c dkimf_checkip: the exact address, then /32 down to /0, ! first at each."""
    internal = hosts("192.0.2.1, !192.0.2.0/24")
    assert internal.matches("192.0.2.1")
    assert not internal.matches("192.0.2.2")
    nested = hosts("10.0.0.0/8, !10.1.0.0/16, 10.1.2.3")
    assert nested.matches("10.1.2.3")
    assert not nested.matches("10.1.9.9")
    assert nested.matches("10.2.0.1")
    assert not hosts("192.0.2.0/24, !192.0.2.0/24").matches("192.0.2.7")  # ! wins a tie


def test_the_most_specific_name_entry_decides_as_in_opendkim() -> None:
    """opendkim.c dkimf_checkhost: the host, then .parent domains, ! first at each level."""
    internal = hosts("!.example.com, mail.example.com, .dept.example.com")
    assert internal.matches(None, "mail.example.com")
    assert internal.matches(None, "a.dept.example.com")
    assert not internal.matches(None, "other.example.com")


def test_negated_names_and_domains() -> None:
    internal = hosts(".example.com, !dmz.example.com")
    assert internal.matches(None, "mail.example.com")
    assert not internal.matches(None, "dmz.example.com")


def test_negation_alone_matches_nothing() -> None:
    assert not hosts("!192.0.2.1").matches("198.51.100.1")


def test_exclusion_by_name_wins_over_inclusion_by_address() -> None:
    internal = hosts("192.0.2.0/24, !.guest.example.com")
    assert not internal.matches("192.0.2.5", "laptop.guest.example.com")
    assert internal.matches("192.0.2.5", "desk.example.com")


# refile: patterns ---------------------------------------------------------------


def test_refile_patterns_match_host_names_with_wildcards(tmp_path: Path) -> None:
    (tmp_path / "peers").write_text("# relays\n*.mx.example.com\n!bad*.mx.example.com\n")
    peers = hosts("refile:peers", base=tmp_path)
    assert peers.entries == ("*.mx.example.com", "!bad*.mx.example.com")
    assert peers.matches(None, "a.mx.example.com")
    assert peers.matches(None, "A.B.MX.example.com")
    assert not peers.matches(None, "bad1.mx.example.com")
    assert not peers.matches(None, "mx.example.com")


def test_refile_pattern_needs_host_name_characters(tmp_path: Path) -> None:
    (tmp_path / "peers").write_text("mx?.example.com\n")
    assert bad_entry("refile:peers", base=tmp_path) == (
        f"bad entry 'mx?.example.com' ({tmp_path}/peers line 1): not a host-name pattern; "
        "use letters, digits, '-', '.', '_' and * for any text, e.g. *.mx.example.com"
    )


def test_wildcards_outside_refile_are_refused() -> None:
    assert bad_entry("*.example.com") == (
        "bad entry '*.example.com': wildcards need a refile:; "
        "put patterns in a file and write refile:PATH"
    )


# Bad entries ---------------------------------------------------------------------

FORMS = (
    "use an IP address (192.0.2.1, 2001:db8::1), a network (192.0.2.0/24, 2001:db8::/32), "
    "a host name (mail.example.com) or a domain (.example.com), optionally preceded by ! "
    "to exclude"
)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("192.0.2.300", f"bad entry '192.0.2.300': not an IP address or network; {FORMS}"),
        ("192.0.2.0/33", f"bad entry '192.0.2.0/33': not an IP address or network; {FORMS}"),
        ("2001:db8::g", f"bad entry '2001:db8::g': not an IP address or network; {FORMS}"),
        (
            "192.0.2/24",
            "bad entry '192.0.2/24': not a complete IPv4 address or network; "
            "write all four parts, e.g. 192.0.2.0/24",
        ),
        ("!", "bad entry '!': '!' excludes nothing; write !ADDRESS, !NETWORK or !HOST"),
        (
            "mail..example.com",
            "bad entry 'mail..example.com': 'mail..example.com' is not a host name (labels of "
            "letters, digits, '-' and '_', at most 63 characters each, separated by dots); "
            + FORMS,
        ),
        (
            ".",
            "bad entry '.': '' is not a host name (labels of letters, digits, '-' and '_', "
            "at most 63 characters each, separated by dots); " + FORMS,
        ),
    ],
)
def test_bad_entries_say_what_is_wrong_and_what_is_accepted(value: str, message: str) -> None:
    assert bad_entry(value) == message


def test_kept_answers_stay_right_when_more_clients_come_than_are_kept() -> None:
    hosts = HostList.parse("10.0.0.0/8, !10.1.2.3, mail.example.com")
    first = [("10.1.2.3", None), ("10.9.9.9", None), (None, "mail.example.com"), ("192.0.2.1", "x")]
    expected = [False, True, True, False]
    assert [hosts.matches(a, h) for a, h in first] == expected
    for n in range(REMEMBERED_CLIENTS + 10):  # more than are kept: the table starts afresh
        assert hosts.matches(f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}") != (
            n == (1 << 16) + (2 << 8) + 3
        )
    assert [hosts.matches(a, h) for a, h in first] == expected
    assert hosts == HostList.parse("10.0.0.0/8, !10.1.2.3, mail.example.com")
