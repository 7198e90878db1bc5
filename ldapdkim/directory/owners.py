"""Who owns an address, and who is in a group: the directory lookups of sender authorization.

``SenderLoginBase``, ``SenderLoginFilter`` and ``SenderLoginAttribute`` say
where the entries owning an address live (people, accounts) and which of
their attributes hold the owning logins, as Postfix's
``smtpd_sender_login_maps`` does with an LDAP table.  A group named by a
domain entry's ``dkimSignAllowedSender`` lists its members in
``memberUid`` (logins), ``member`` or ``uniqueMember`` (DNs whose first RDN
value is the login).

Every answer is cached: owners for ``LDAPCacheTTL``, "nobody" for
``LDAPNegativeCacheTTL``, and the last answer is served for up to
``DirectoryMaxStale`` while the directory cannot be asked, so that warm
signing makes no LDAP round trip.  The address reaches the filter only
after the From field was read strictly, with every substitution escaped
(RFC 4515): ``*``, parentheses, backslash and NUL cannot widen it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import ldap
import ldap.dn
import ldap.filter
from cachetools import LRUCache, TTLCache

from ldapdkim.directory.ldapbackend import LdapBackend
from ldapdkim.errors import DirectoryUnavailable

log = logging.getLogger(__name__)

MAX_ADDRESS = 254
"""RFC 5321 §4.5.3.1.3: the longest path; a longer From address owns nothing."""
_GROUP_ATTRIBUTES = ["memberUid", "member", "uniqueMember"]


@dataclass(frozen=True)
class LoginQuery:
    """Where and how to find the owners of an address."""

    base: str
    filter_template: str
    attributes: tuple[str, ...]

    def filter_for(self, address: str) -> str:
        """The filter for ``address``, each substitution escaped (RFC 4515)."""
        local, _, domain = address.rpartition("@")
        parts = {"s": address, "u": local, "d": domain, "%": "%"}
        out, chars = [], iter(self.filter_template)
        for char in chars:
            if char != "%":
                out.append(char)
                continue
            code = next(chars, "")
            value = parts[code]
            out.append(value if code == "%" else ldap.filter.escape_filter_chars(value))
        return "".join(out)


class SenderDirectory:
    """Cached owners of addresses and members of groups, from one LDAP connection."""

    def __init__(
        self,
        backend: LdapBackend,
        query: LoginQuery | None,
        *,
        ttl: float,
        negative_ttl: float,
        max_stale: float,
        maxsize: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.query = query
        self.max_stale = max_stale
        self._clock = clock
        self._lock = threading.Lock()
        self._fresh: TTLCache[tuple[str, str], frozenset[str]] = TTLCache(
            maxsize, max(ttl, 0.001), timer=clock
        )
        self._negative: TTLCache[tuple[str, str], frozenset[str]] = TTLCache(
            maxsize, max(negative_ttl, 0.001), timer=clock
        )
        self._last: LRUCache[tuple[str, str], tuple[frozenset[str], float]] = LRUCache(maxsize)

    @property
    def searches(self) -> int:
        """Searches sent to the server so far (cached answers do not count)."""
        return self.backend.searches

    def owners(self, address: str) -> frozenset[str]:
        """The logins (lowercase) that own ``address``; empty when none does.

        Raises:
            DirectoryUnavailable: the directory cannot be asked and nothing recent is known.
        """
        query = self.query
        if query is None or len(address) > MAX_ADDRESS or "\0" in address:
            return frozenset()
        return self._cached(
            ("owner", address.lower()),
            lambda: self._logins(query.base, query.filter_for(address), query.attributes),
        )

    def members(self, group_dn: str) -> frozenset[str]:
        """The logins (lowercase) of the members of the group ``group_dn``.

        Raises:
            DirectoryUnavailable: the directory cannot be asked and nothing recent is known.
        """
        return self._cached(("group", group_dn.lower()), lambda: self._group(group_dn))

    def _cached(self, key: tuple[str, str], fetch: Callable[[], frozenset[str]]) -> frozenset[str]:
        with self._lock:
            for cache in (self._fresh, self._negative):
                if key in cache:
                    hit: frozenset[str] = cache[key]
                    return hit
        try:
            value = fetch()
        except DirectoryUnavailable:
            with self._lock:
                known: tuple[frozenset[str], float] | None = self._last.get(key)
            if known is not None and self._clock() - known[1] <= self.max_stale:
                log.warning("directory unavailable; using what it said about %s", key[1])
                return known[0]
            raise
        with self._lock:
            (self._fresh if value else self._negative)[key] = value
            self._last[key] = (value, self._clock())
        return value

    def _logins(self, base: str, filterstr: str, attributes: tuple[str, ...]) -> frozenset[str]:
        found = self.backend.search(base, ldap.SCOPE_SUBTREE, filterstr, list(attributes))
        wanted = {a.lower() for a in attributes}
        logins: set[str] = set()
        for _dn, attrs in found:
            for name in wanted:
                logins.update(
                    v.decode("utf-8", "replace").strip().lower() for v in attrs.get(name, ())
                )
        return frozenset(login for login in logins if login)

    def _group(self, group_dn: str) -> frozenset[str]:
        found = self.backend.search(group_dn, ldap.SCOPE_BASE, "(objectClass=*)", _GROUP_ATTRIBUTES)
        logins = set()
        for _dn, attrs in found:
            for name, values in attrs.items():
                for value in values:
                    text = value.decode("utf-8", "replace").strip()
                    if name.lower() == "memberuid":
                        logins.add(text.lower())
                    else:
                        logins.add(_first_rdn_value(text))
        return frozenset(login for login in logins if login)


def _first_rdn_value(dn: str) -> str:
    """``alice`` of ``uid=alice,ou=people,...``; empty for what is not a DN."""
    try:
        return str(ldap.dn.str2dn(dn)[0][0][1]).lower()
    except (ldap.DECODING_ERROR, IndexError):
        return ""
