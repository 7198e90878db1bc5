"""TXT lookups for verification, through dnspython, with the ``Nameservers`` keyword.

Timeouts and server failures raise :class:`DnsTemporaryError`, so that a
verifier reports ``temperror`` and never ``fail`` for a key it could not fetch
(RFC 6376 §6.1.2).  Answers are cached for their TTL by dnspython's cache.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.resolver

from ldapdkim import metrics
from ldapdkim.errors import DnsTemporaryError


@functools.lru_cache(maxsize=4096)
def _qname(name: str) -> dns.name.Name:
    """The absolute name (dnspython's names are immutable: kept for the next message)."""
    return dns.name.from_text(name)


class TxtLookup:
    """A :class:`~ldapdkim.signing.keyfetch.DnsLookup` that asks DNS through dnspython."""

    def __init__(self, nameservers: Sequence[tuple[str, int]] = (), timeout: float = 5.0) -> None:
        if nameservers:
            self._resolver = dns.resolver.Resolver(configure=False)
            self._resolver.nameservers = [host for host, _ in nameservers]
            self._resolver.nameserver_ports = {host: port for host, port in nameservers}
        else:
            self._resolver = dns.resolver.Resolver()
        self._resolver.lifetime = timeout
        self._resolver.cache = dns.resolver.LRUCache(10_000)

    def __call__(self, name: str, /) -> list[bytes]:
        """Every TXT record at ``name``, each one's strings joined; [] when there is none.

        Raises:
            DnsTemporaryError: the query timed out or the servers failed.
        """
        started = time.monotonic()
        result = "error"
        try:
            answer = self._resolver.resolve(name, "TXT", search=False)
            result = "answer"
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            result = "nxdomain"
            return []
        except dns.exception.Timeout:
            result = "timeout"
            raise DnsTemporaryError(f"DNS query for {name} TXT timed out") from None
        except (dns.resolver.NoNameservers, dns.exception.DNSException) as err:
            raise DnsTemporaryError(f"DNS query for {name} TXT failed: {err}") from None
        finally:
            metrics.labelled(metrics.DNS_QUERIES, result).observe(time.monotonic() - started)
        return [b"".join(rdata.strings) for rdata in answer]

    def cached(self, name: str, /) -> list[bytes] | None:
        """What :meth:`__call__` would answer from the cache now, or None to ask it.

        Counted in ``ldapdkim_dns_query_seconds`` as a lookup answered, as the
        cached answers of :meth:`__call__` are.  A cached negative answer is
        left to :meth:`__call__`.
        """
        started = time.monotonic()
        try:
            qname = _qname(name)
        except dns.exception.DNSException:
            return None
        answer = self._resolver.cache.get((qname, dns.rdatatype.TXT, dns.rdataclass.IN))
        if answer is None or answer.rrset is None:
            return None
        found = [b"".join(rdata.strings) for rdata in answer]
        metrics.labelled(metrics.DNS_QUERIES, "answer").observe(time.monotonic() - started)
        return found
