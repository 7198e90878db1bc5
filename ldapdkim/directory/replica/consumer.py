"""The consumer side of content sync (RFC 4533) and how a server's changes are followed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import ldap
from ldap.ldapobject import SimpleLDAPObject
from ldap.syncrepl import SyncreplConsumer

from ldapdkim import schema
from ldapdkim.directory.replica import usnpoll
from ldapdkim.directory.replica.feed import ReplicaFeed
from ldapdkim.directory.replica.syncstate import RESPONSE_CONTROLS

SYNC_FILTER = f"(|(objectClass={schema.POLICY_CLASS})(objectClass={schema.KEY_CLASS}))"
SYNC_ATTRIBUTES = sorted(
    {*schema.POLICY_ATTRIBUTES, *schema.KEY_ATTRIBUTES, "objectClass"} - {schema.PUBLIC_KEY}
)
"""What the milter signs with.  The public key and createTimestamp serve audits
and DNS export, which read the directory itself; left out, an RSA-2048 key
entry stays under LMDB's 2 kB in-page limit instead of taking a 4 kB page."""
POLL_TIMEOUT = 0.5
KEEPALIVE_INTERVAL = 5.0
"""A root DSE read this often on the sync connection notices a frozen server."""
_REFUSED_SYNC = (ldap.UNAVAILABLE_CRITICAL_EXTENSION, ldap.PROTOCOL_ERROR)
_REFRESH_REQUIRED = 4096  # e-syncRefreshRequired, RFC 4533 §2.3
SYNC_CONTROL = "1.3.6.1.4.1.4203.1.9.1.1"
"""RFC 4533's sync request control, as the root DSE lists it (slapd's syncprov overlay,
389-DS's Content Synchronization plugin)."""


TRACKING_ATTRIBUTES = ["supportedControl", "highestCommittedUSN"]
"""What the root DSE says about how a server's changes can be followed."""


def tracking(root: Mapping[str, Sequence[bytes]]) -> str | None:
    """How to follow the changes of the server whose root DSE is ``root`` (attributes as read,
    TRACKING_ATTRIBUTES at least): ``sync`` (RFC 4533), ``usn`` (Active Directory's update
    sequence numbers) or None (neither: lookups only)."""
    names = {name.lower(): values for name, values in root.items()}
    if SYNC_CONTROL.encode() in names.get("supportedcontrol", ()):
        return "sync"
    return "usn" if usnpoll.tracks_usn(root) else None


def _ping(conn: Any, timeout: float) -> None:
    """One round trip every server answers: the root DSE, no attributes.

    (Who am I?, RFC 4532, would do, but Active Directory does not offer it.)
    """
    conn.search_st("", ldap.SCOPE_BASE, "(objectClass=*)", ["1.1"], 0, timeout)


def _result_code(err: ldap.LDAPError) -> int | None:
    details = err.args[0] if err.args and isinstance(err.args[0], dict) else {}
    code = details.get("result")
    return code if isinstance(code, int) else None


def _cannot_resume(err: ldap.LDAPError) -> bool:
    """Whether the server refused the sync search because of the cookie we sent.

    RFC 4533 §2.3 says e-syncRefreshRequired; slapd 2.5 answers a cookie
    newer than its own state with unwillingToPerform ("consumer state is
    newer than provider!").
    """
    return _result_code(err) == _REFRESH_REQUIRED or isinstance(err, ldap.UNWILLING_TO_PERFORM)


class _Consumer(SyncreplConsumer, SimpleLDAPObject):  # type: ignore[misc]
    """A python-ldap connection whose sync callbacks go to a :class:`ReplicaFeed`."""

    feed: ReplicaFeed

    def result4(self, *args: Any, **kwargs: Any) -> Any:
        """python-ldap's, reading each entry's sync state without pyasn1 (:mod:`.syncstate`)."""
        kwargs.setdefault("resp_ctrl_classes", RESPONSE_CONTROLS)
        return super().result4(*args, **kwargs)

    def syncrepl_get_cookie(self) -> str | None:
        return self.feed.cookie

    def syncrepl_set_cookie(self, cookie: str | bytes) -> None:
        self.feed.set_cookie(cookie)

    def syncrepl_entry(self, dn: str, attributes: dict[str, list[bytes]], uuid: Any) -> None:
        self.feed.entry(str(uuid), dn, attributes)

    def syncrepl_delete(self, uuids: Sequence[Any]) -> None:
        self.feed.delete([str(u) for u in uuids])

    def syncrepl_present(self, uuids: Sequence[Any] | None, refreshDeletes: bool = False) -> None:
        self.feed.present(None if uuids is None else [str(u) for u in uuids], refreshDeletes)

    def syncrepl_refreshdone(self) -> None:
        self.feed.refresh_done()
