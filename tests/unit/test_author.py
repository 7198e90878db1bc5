"""The author is read one way: a From field two parsers could read differently is refused.

Cases after RFC 5322 §3.4, DMARC (RFC 7489 §6.6.1) and "Composition Kills"
(Chen, Paxson, Jiang, USENIX Security 2020).
"""

from __future__ import annotations

import pytest

from ldapdkim.errors import InvalidDomain, MessageError
from ldapdkim.signing.author import author_address
from ldapdkim.signing.policy import author_domain


@pytest.mark.parametrize(
    ("value", "address"),
    [
        (b" alice@example.com\r\n", "alice@example.com"),
        (b" <alice@example.com>\r\n", "alice@example.com"),
        (b" Alice <alice@example.com>\r\n", "alice@example.com"),
        (b' "Doe, John" <john@example.com>\r\n', "john@example.com"),
        (b' John "J." Doe <john@example.com>\r\n', "john@example.com"),
        (b' "victim@bank.test" <attacker@evil.test>\r\n', "attacker@evil.test"),
        (b" =?utf-8?Q?J=C3=BCrgen?= <juergen@example.de>\r\n", "juergen@example.de"),
        (b" Alice\r\n\t<alice@Example.COM>\r\n", "alice@example.com"),
        (" Jürgen <jürgen@bücher.example>\r\n".encode(), "jürgen@xn--bcher-kva.example"),
        (b' "alice smith"@example.com\r\n', '"alice smith"@example.com'),
    ],
)
def test_one_plain_mailbox_is_read(value: bytes, address: str) -> None:
    assert author_address(value) == address


@pytest.mark.parametrize(
    ("value", "address"),
    [
        # The case: a leading comment holding another address, then a quoted
        # display name with parentheses, then the angle-addr.
        (
            b' (victim@bank.test) "Alice (Sales)" <alice@example.com>\r\n',
            "alice@example.com",
        ),
        (b" <alice@example.com>(comment)\r\n", "alice@example.com"),
        (b" attacker@evil.test(victim@bank.test)\r\n", "attacker@evil.test"),
        (b" (x) <alice@example.com>\r\n", "alice@example.com"),
        (b" alice@example.com (Alice Smith)\r\n", "alice@example.com"),
        (b" Alice (the boss) Smith <alice@example.com>\r\n", "alice@example.com"),
        (b" Alice < alice@example.com >\r\n", "alice@example.com"),
        (b" Alice <(inside) alice@example.com (inside)>\r\n", "alice@example.com"),
        (b" alice (before at) @ (after at) example.com\r\n", "alice@example.com"),
        (b" Alice <alice@example.com> (after)\r\n", "alice@example.com"),
        (b" (a (nested (twice)) comment) <alice@example.com>\r\n", "alice@example.com"),
        (b" (a quoted \\) pair and \\( in a comment) alice@example.com\r\n", "alice@example.com"),
        (b" Alice(x)<alice@example.com>(y)\r\n", "alice@example.com"),
        (b' "Smith, (Alice)" (note: a, b; c) <alice@example.com>\r\n', "alice@example.com"),
        (b" (=?utf-8?Q?J=C3=BCrgen?=) juergen@example.de\r\n", "juergen@example.de"),
        (b" Alice\r\n (folded\r\n comment)\r\n <alice@example.com>\r\n", "alice@example.com"),
    ],
)
def test_comments_and_whitespace_where_rfc_5322_allows_them_are_read(
    value: bytes, address: str
) -> None:
    """RFC 5322 §3.2.2 CFWS: comments never choose the address; the addr-spec does."""
    assert author_address(value) == address


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (b" <attacker@evil.test>, <victim@bank.test>\r\n", "several addresses"),
        (b" victim@bank.test <attacker@evil.test>\r\n", "display name that is not words"),
        (b' "attacker@evil.test"@bank.test\r\n', "quoted local part holding '@'"),
        (b" <@evil.test:victim@bank.test>\r\n", "group or route"),
        (b" friends: victim@bank.test;\r\n", "group or route"),
        (b" =?utf-8?B?dmljdGltQGJhbmsudGVzdA==?= <attacker@evil.test>\r\n", "encoded word"),
        (b" <=?utf-8?Q?victim?=@bank.test>\r\n", "encoded word"),
        (b" victim@bank.test\x00@evil.test\r\n", "control character"),
        (b" <victim@bank.test>>\r\n", "angle brackets"),
        (b" <<victim@bank.test>\r\n", "angle brackets"),
        (b" <victim@bank.test> attacker@evil.test\r\n", "text after the '>'"),
        (b' "unterminated <victim@bank.test>\r\n', "unterminated"),
        (b" \r\n", "no local part"),
        (b" victim@\r\n", "no local part or no domain"),
        (b" \xff\xfe@bank.test\r\n", "not UTF-8"),
        (b" victim(x).bank@evil.test\r\n", "obsolete syntax"),
        (b" victim@bank (x) .test\r\n", "obsolete syntax"),
        (b" <victim . x@bank.test>\r\n", "obsolete syntax"),
        (b' victim."x"@bank.test\r\n', "obsolete syntax"),
        (b" (unterminated <victim@bank.test>\r\n", "unterminated comment"),
        (b" (a (nested) <victim@bank.test>\r\n", "unterminated comment"),
        (b" victim) <victim@bank.test>\r\n", "closes no comment"),
        (b" (x, y: <victim@bank.test>), <attacker@evil.test>\r\n", "several addresses"),
        (b" (=?utf-8?Q?victim=40bank.test?=) <a@evil.test>\r\n", "comment whose encoded word"),
        (b" victim <x@bank.test> (y) z\r\n", "text after the '>'"),
        (b" victim@[192.0.2.1]\r\n", "domain literal"),
    ],
)
def test_an_ambiguous_from_is_refused_with_what_was_found(value: bytes, why: str) -> None:
    with pytest.raises(MessageError, match=why):
        author_address(value)


def test_a_domain_literal_is_no_domain_to_sign() -> None:
    with pytest.raises((MessageError, InvalidDomain)):
        author_address(b" alice@[192.0.2.1]\r\n")


def test_the_author_domain_needs_exactly_one_from_field() -> None:
    one = [(b"From", b" a@example.com\r\n"), (b"To", b" b@example.net\r\n")]
    assert author_domain(one) == "example.com"
    with pytest.raises(MessageError, match="2 From header fields"):
        author_domain([*one, (b"from", b" c@example.org\r\n")])
    with pytest.raises(MessageError, match="no From"):
        author_domain([(b"To", b" b@example.net\r\n")])
