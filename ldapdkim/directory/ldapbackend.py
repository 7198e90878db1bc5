"""The LDAP backend: python-ldap over ``ldap://``, ``ldaps://`` or ``ldapi://``.

One connection, reused, guarded by a lock.  Every operation is bounded by
``LDAPTimeout`` (``OPT_NETWORK_TIMEOUT`` for connecting, ``OPT_TIMEOUT`` for
each operation: a frozen server accepts TCP connections, so a connect timeout
alone would not do).  Several URIs are handed to libldap, which tries them in
order.  A connection that fails is dropped and rebuilt once before the
operation is reported as unavailable.

Search filters are built with ``filter_format`` (RFC 4515 escaping) from
names that :mod:`ldapdkim.domainname` has already validated.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import ldap
import ldap.filter
import ldap.sasl
import ldapurl  # type: ignore[import-untyped]
from ldap.controls import SimplePagedResultsControl

from ldapdkim import metrics, schema
from ldapdkim.config.ldap import LdapSettings
from ldapdkim.directory.entries import Entry, lower_keys, normalize_dn, parent_dn
from ldapdkim.errors import DirectoryError, DirectoryUnavailable

log = logging.getLogger(__name__)

_POLICY_ATTRS = [*schema.POLICY_ATTRIBUTES, "objectClass"]
# createTimestamp (RFC 4512 §3.4) tells audits a key's age; nothing else reads it.
_KEY_ATTRS = [*schema.KEY_ATTRIBUTES, "objectClass", "createTimestamp"]
_PAGE_SIZE = 500
_T = TypeVar("_T")


def reason(err: ldap.LDAPError) -> str:
    """The human part of a python-ldap error (its ``desc`` and ``info``)."""
    details: dict[str, Any] = err.args[0] if err.args and isinstance(err.args[0], dict) else {}
    desc = str(details.get("desc", type(err).__name__))
    info = details.get("info")
    return f"{desc}: {info}" if info else desc


def paged_search(
    conn: Any, base: str, scope: int, filterstr: str, attrs: list[str], timeout: float
) -> list[tuple[str, dict[str, list[bytes]]]]:
    """Every entry a search finds, page by page (RFC 2696), so no size limit cuts it short.

    python-ldap errors pass through for the caller to name.
    """
    page = SimplePagedResultsControl(True, size=_PAGE_SIZE, cookie="")
    results: list[tuple[str, dict[str, list[bytes]]]] = []
    while True:
        msgid = conn.search_ext(base, scope, filterstr, attrs, serverctrls=[page], timeout=timeout)
        _type, data, _msgid, controls = conn.result3(msgid, timeout=timeout)
        results.extend((dn, a) for dn, a in data if dn is not None)
        cookie = next(
            (c.cookie for c in controls if c.controlType == SimplePagedResultsControl.controlType),
            b"",
        )
        if not cookie:
            return results
        page.cookie = cookie


def peer_uri(conn: Any, uris: Sequence[str]) -> str:
    """Which of ``uris`` the connection ``conn`` went to (libldap tries them in order)."""
    if len(uris) == 1:
        return uris[0]
    try:
        fd = conn.get_option(ldap.OPT_DESC)
        with socket.socket(fileno=os.dup(fd)) as sock:
            family, peer = sock.family, sock.getpeername()
    except (OSError, ldap.LDAPError, ValueError):
        return uris[0]
    for uri in uris:
        url = ldapurl.LDAPUrl(uri)
        if family == socket.AF_UNIX:
            if url.urlscheme == "ldapi":
                return uri
            continue
        host, _, port = (url.hostport or "").rpartition(":")
        default = 636 if url.urlscheme == "ldaps" else 389
        if int(port or default) == peer[1] and host.strip("[]") in (peer[0], "localhost"):
            return uri
    return uris[0]


@contextlib.contextmanager
def _timed_search() -> Iterator[None]:
    """Count one search and its latency (``ldapdkim_ldap_search_seconds``)."""
    started = time.monotonic()
    result = "error"
    try:
        yield
        result = "ok"
    except ldap.NO_SUCH_OBJECT:  # an answer: nothing there
        result = "ok"
        raise
    finally:
        metrics.labelled(metrics.LDAP_SEARCHES, result).observe(time.monotonic() - started)


class LdapBackend:
    """Entries from an LDAP server, reached and bound as ``ldap_settings`` say."""

    def __init__(self, ldap_settings: LdapSettings) -> None:
        self.ldap_settings = ldap_settings
        self.uris = ldap_settings.uris
        self.base_dn = ldap_settings.base_dn
        self.searches = 0
        self.generation = 0
        self.serves_from_memory = False
        """Never changes: every lookup asks the server."""
        self.last_answer: float | None = None
        """time.time() of the last operation a server answered (for health)."""
        self._conn: Any = None
        self._lock = threading.Lock()
        self._quiet_until = 0.0
        """time.monotonic() until which the server is not asked again (after a failure)."""
        self._quiet_reason = ""

    def describe(self) -> str:
        return self.ldap_settings.describe()

    def connected_uri(self) -> str | None:
        """The URI of the server the shared connection goes to, or None (for status)."""
        conn = self._conn
        return peer_uri(conn, self.uris) if conn is not None else None

    # -- connection ---------------------------------------------------------

    def _open(self, factory: Callable[..., Any] = ldap.initialize) -> Any:
        """A bound connection to the first server that answers (libldap's URI list).

        ``factory(uri_list, bytes_mode=False)`` makes the connection object;
        :mod:`ldapdkim.directory.replica.sync` passes a content-sync consumer class.
        """
        s = self.ldap_settings
        conn = factory(" ".join(self.uris), bytes_mode=False)
        conn.set_option(ldap.OPT_PROTOCOL_VERSION, ldap.VERSION3)
        conn.set_option(ldap.OPT_REFERRALS, 0)
        conn.set_option(ldap.OPT_DEREF, ldap.DEREF_NEVER)
        conn.set_option(ldap.OPT_NETWORK_TIMEOUT, s.timeout)
        conn.set_option(ldap.OPT_TIMEOUT, s.timeout)
        if s.ca_cert_file is not None:
            try:
                conn.set_option(ldap.OPT_X_TLS_CACERTFILE, str(s.ca_cert_file))
                conn.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_DEMAND)
                conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)
            except (ValueError, ldap.LDAPError):
                raise DirectoryUnavailable(
                    f"cannot set up TLS with LDAPTLSCACertFile {s.ca_cert_file}; "
                    "check that it holds PEM CA certificates"
                ) from None
        try:
            if s.start_tls and not all(u.startswith("ldaps:") for u in self.uris):
                conn.start_tls_s()
            self._bind(conn)
        except (ldap.STRONG_AUTH_REQUIRED, ldap.CONFIDENTIALITY_REQUIRED) as err:
            raise DirectoryUnavailable(
                f"{self.describe()} refuses a simple bind without TLS ({reason(err)}), as "
                "Active Directory does by default; use an ldaps:// Directory or LDAPUseTLS yes, "
                "with LDAPTLSCACertFile"
            ) from None
        except ldap.INVALID_CREDENTIALS:
            raise DirectoryUnavailable(
                f"{self.describe()}: bind as {s.bind_dn!r} refused (invalid "
                f"credentials); check {s.credentials}"
            ) from None
        except ldap.LDAPError as err:
            raise DirectoryUnavailable(
                f"cannot reach {self.describe()} ({reason(err)}); check {s.connection_keywords}"
            ) from None
        return conn

    def open_connection(self, factory: Callable[..., Any] = ldap.initialize) -> Any:
        """A new bound connection of the caller's own, set up like the shared one.

        Raises:
            DirectoryUnavailable: no server answered, or the bind failed.
        """
        return self._open(factory)

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        """:meth:`open_connection` for one ``with`` block, unbound when it ends."""
        conn = self._open()
        try:
            yield conn
        finally:
            with contextlib.suppress(ldap.LDAPError):
                conn.unbind_s()

    def _bind(self, conn: Any) -> None:
        s = self.ldap_settings
        mechanism = (s.sasl_mechanism or "SIMPLE").upper()
        if mechanism == "SIMPLE":
            password = s.password.reveal() if s.password else ""
            conn.simple_bind_s(s.bind_dn or "", password)
        elif mechanism == "EXTERNAL":
            conn.sasl_non_interactive_bind_s("EXTERNAL")
        else:
            callbacks: dict[int, str] = {}
            if s.sasl_authcid:
                callbacks[ldap.sasl.CB_AUTHNAME] = s.sasl_authcid
            if s.password:
                callbacks[ldap.sasl.CB_PASS] = s.password.reveal()
            if s.sasl_authzid:
                callbacks[ldap.sasl.CB_USER] = s.sasl_authzid
            conn.sasl_interactive_bind_s("", ldap.sasl.sasl(callbacks, mechanism))

    def execute(self, operation: Callable[[Any], _T]) -> _T:
        """``operation(connection)`` on the shared connection, with one reconnect if it broke.

        Other python-ldap errors pass through unchanged, for the caller to
        name (the searches here; :mod:`ldapdkim.directory.writer`'s writes).

        After a failure that cost time (a timeout: the server is frozen or
        overloaded), calls fail at once for ``LDAPTimeout`` seconds instead of
        asking again: each attempt costs up to two timeouts, and the callers
        queued on the connection's lock would otherwise pay them one after the
        other (16 sessions: 16 x LDAPTimeout).  This way no caller waits much
        longer than two timeouts, and the resolver serves what it knows
        meanwhile.  A quick failure (connection refused) is retried every time,
        so a restarted server is used at once.

        Raises:
            DirectoryUnavailable: no server answered, or the bind failed.
        """
        with self._lock:
            wait = self._quiet_until - time.monotonic()
            if wait > 0:
                raise DirectoryUnavailable(f"{self._quiet_reason} (asking again in {wait:.1f} s)")
            started = time.monotonic()
            try:
                return self._attempt(operation)
            except DirectoryUnavailable as err:
                now = time.monotonic()
                if now - started >= self.ldap_settings.timeout / 2:
                    self._quiet_until = now + self.ldap_settings.timeout
                    self._quiet_reason = str(err)
                raise

    def _attempt(self, operation: Callable[[Any], _T]) -> _T:
        """``operation`` with one reconnect; the caller holds the lock."""
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = self._open()
            try:
                answer = operation(self._conn)
                self.last_answer = time.time()
                return answer
            except (ldap.SERVER_DOWN, ldap.TIMEOUT, ldap.CONNECT_ERROR, ldap.UNAVAILABLE) as e:
                self._drop()
                if attempt == 2:
                    raise DirectoryUnavailable(
                        f"{self.describe()} did not answer ({reason(e)}); "
                        "check that the server runs, or raise LDAPTimeout"
                    ) from None
                log.info("directory connection lost (%s); reconnecting", reason(e))
        raise AssertionError("unreachable")

    def search(self, base: str, scope: int, filterstr: str, attrs: list[str]) -> list[Entry]:
        """One search (counted, timed, paged), with one reconnect on a broken connection;
        attribute names lowercase; a missing base finds nothing.

        Raises:
            DirectoryUnavailable: no server answered, or the bind failed.
            DirectoryError: the server refused the search.
        """

        def run(_conn: Any) -> list[Entry]:
            self.searches += 1
            with _timed_search():
                return self._paged_search(base, scope, filterstr, attrs)

        try:
            return self.execute(run)
        except ldap.NO_SUCH_OBJECT:
            return []
        except ldap.LDAPError as err:
            raise DirectoryError(
                f"search under {base!r} failed at {self.describe()}: {reason(err)}"
            ) from None

    def _paged_search(self, base: str, scope: int, filterstr: str, attrs: list[str]) -> list[Entry]:
        found = paged_search(self._conn, base, scope, filterstr, attrs, self.ldap_settings.timeout)
        return [(dn, lower_keys(a)) for dn, a in found]

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.unbind_s()
            except ldap.LDAPError:
                pass
            self._conn = None

    # -- Backend ------------------------------------------------------------

    def search_policies(self, names: Sequence[str]) -> list[Entry]:
        alternatives = "".join(f"({schema.DOMAIN_NAME}=%s)" for _ in names)
        filterstr = ldap.filter.filter_format(
            f"(&(objectClass={schema.POLICY_CLASS})(|{alternatives}))", list(names)
        )
        return self.search(self.base_dn, ldap.SCOPE_SUBTREE, filterstr, _POLICY_ATTRS)

    def search_keys(self, policy_dn: str) -> list[Entry]:
        return self.search(
            policy_dn, ldap.SCOPE_ONELEVEL, f"(objectClass={schema.KEY_CLASS})", _KEY_ATTRS
        )

    def walk(self) -> Iterator[tuple[Entry, list[Entry]]]:
        policies = self.search(
            self.base_dn, ldap.SCOPE_SUBTREE, f"(objectClass={schema.POLICY_CLASS})", _POLICY_ATTRS
        )
        key_entries = self.search(
            self.base_dn, ldap.SCOPE_SUBTREE, f"(objectClass={schema.KEY_CLASS})", _KEY_ATTRS
        )
        children: dict[str, list[Entry]] = {}
        for entry in key_entries:
            children.setdefault(parent_dn(entry[0]), []).append(entry)
        for entry in policies:
            yield entry, children.get(normalize_dn(entry[0]), [])

    def close(self) -> None:
        with self._lock:
            self._drop()
