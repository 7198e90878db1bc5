"""Key fetches: answers a lookup holds in its cache are taken at once, the rest asked in
the pool under one deadline (:mod:`ldapdkim.signing.keyfetch`); what
:class:`~ldapdkim.signing.dnslookup.TxtLookup` holds in its cache."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
from prometheus_client import REGISTRY

from ldapdkim.errors import DnsTemporaryError
from ldapdkim.signing.dnslookup import TxtLookup
from ldapdkim.signing.keyfetch import fetch_keys

RECORD = b"v=DKIM1; k=rsa; p=MIIB"


class Table:
    """A lookup with a cache: ``cache`` answers at once; anything else is asked (and
    ``never`` names are never answered)."""

    def __init__(self, cache: dict[str, list[bytes]], never: frozenset[str] = frozenset()) -> None:
        self.cache = cache
        self.never = never
        self.asked: list[str] = []
        self.threads: set[str] = set()
        self.release = threading.Event()

    def __call__(self, name: str, /) -> Sequence[bytes]:
        self.asked.append(name)
        self.threads.add(threading.current_thread().name)
        if name in self.never:
            self.release.wait(10)
            raise DnsTemporaryError("released")
        return [b"asked " + name.encode()]

    def cached(self, name: str, /) -> Sequence[bytes] | None:
        return self.cache.get(name)


def test_cached_answers_are_taken_without_asking() -> None:
    lookup = Table({"a._domainkey.example.com": [RECORD]})
    answers = fetch_keys(["a._domainkey.example.com"], lookup, 5.0)
    assert answers == {"a._domainkey.example.com": [RECORD]}
    assert lookup.asked == []


def test_names_not_in_the_cache_are_asked_in_the_pool() -> None:
    lookup = Table({"a._domainkey.example.com": [RECORD]})
    answers = fetch_keys(["a._domainkey.example.com", "b._domainkey.example.com"], lookup, 5.0)
    assert answers == {
        "a._domainkey.example.com": [RECORD],
        "b._domainkey.example.com": [b"asked b._domainkey.example.com"],
    }
    assert lookup.asked == ["b._domainkey.example.com"]
    assert all(name.startswith("ldapdkim-dns") for name in lookup.threads)


def test_a_cached_answer_is_not_held_up_by_a_key_that_never_answers() -> None:
    lookup = Table(
        {"a._domainkey.example.com": [RECORD]}, never=frozenset({"slow._domainkey.example.com"})
    )
    started = time.monotonic()
    try:
        answers = fetch_keys(
            ["slow._domainkey.example.com", "a._domainkey.example.com"], lookup, 0.3
        )
    finally:
        lookup.release.set()
    assert time.monotonic() - started < 2.0
    assert answers["a._domainkey.example.com"] == [RECORD]
    assert isinstance(answers["slow._domainkey.example.com"], DnsTemporaryError)


def test_a_lookup_without_a_cache_is_asked_for_every_name() -> None:
    asked: list[str] = []

    def lookup(name: str, /) -> Sequence[bytes]:
        asked.append(name)
        return [RECORD]

    assert fetch_keys(["a.example", "b.example", "a.example"], lookup, 5.0) == {
        "a.example": [RECORD],
        "b.example": [RECORD],
    }
    assert sorted(asked) == ["a.example", "b.example"]


def _answers_counted() -> float:
    value = REGISTRY.get_sample_value("ldapdkim_dns_query_seconds_count", {"result": "answer"})
    return value or 0.0


def _put(lookup: TxtLookup, name: str, *texts: bytes) -> None:
    """An answer in the resolver's cache, as a query for ``name`` would leave it."""
    qname = dns.name.from_text(name)
    response = dns.message.make_response(dns.message.make_query(qname, dns.rdatatype.TXT))
    assert isinstance(response, dns.message.QueryMessage)
    rrset = response.find_rrset(
        response.answer, qname, dns.rdataclass.IN, dns.rdatatype.TXT, create=True
    )
    for text in texts:
        strings = " ".join(f'"{text[i : i + 255].decode()}"' for i in range(0, len(text), 255))
        rrset.add(dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, strings), 300)
    answer = dns.resolver.Answer(qname, dns.rdatatype.TXT, dns.rdataclass.IN, response)
    lookup._resolver.cache.put((qname, dns.rdatatype.TXT, dns.rdataclass.IN), answer)


def test_txtlookup_answers_from_its_cache_as_a_query_would_and_counts_it() -> None:
    lookup = TxtLookup([("127.0.0.1", 9)], timeout=0.2)  # the discard port: no server
    long_record = RECORD + b"A" * 400  # two character-strings, joined
    _put(lookup, "s1._domainkey.example.com", long_record, b"v=spf1 -all")
    before = _answers_counted()
    assert lookup.cached("s1._domainkey.example.com") == [long_record, b"v=spf1 -all"]
    assert _answers_counted() == before + 1
    assert lookup("s1._domainkey.example.com") == [long_record, b"v=spf1 -all"]
    assert _answers_counted() == before + 2


def test_txtlookup_has_nothing_cached_for_a_name_never_asked_or_not_a_name() -> None:
    lookup = TxtLookup([("127.0.0.1", 9)], timeout=0.2)
    before = _answers_counted()
    assert lookup.cached("s1._domainkey.example.com") is None
    assert lookup.cached("x" * 300 + ".example.com") is None  # a label over 63 octets
    assert _answers_counted() == before
