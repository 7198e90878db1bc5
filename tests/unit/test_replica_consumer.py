"""Content sync's persist phase: a change reaches the database DELAY after it arrives.

python-ldap's ``syncrepl_poll`` returns after each message from the server;
waiting POLL_TIMEOUT for the next one kept a lone change uncommitted (and so
unseen by signing) five times longer than :data:`~ldapdkim.directory.replica.feed.DELAY`.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import ldap

from ldapdkim import config
from ldapdkim.directory.ldapbackend import LdapBackend
from ldapdkim.directory.replica.consumer import POLL_TIMEOUT, Consumer, Ended
from ldapdkim.directory.replica.feed import DELAY, ReplicaFeed
from ldapdkim.directory.replica.store import DATABASE, ReplicaStore

BASE = "ou=d,dc=test"
DOMAIN = f"ou=example.com,{BASE}"
POLICY = {"objectClass": [b"dkimSignDomainPolicy"], "dkimSignDomainName": [b"example.com"]}


class Server:
    """A sync connection whose server sends one change in the persist phase, then nothing."""

    def __init__(self, feed: ReplicaFeed) -> None:
        self.feed = feed
        self.timeouts: list[float] = []

    def syncrepl_search(self, *args: Any, **kwargs: Any) -> int:
        return 1

    def syncrepl_poll(self, *, msgid: int, timeout: float, **options: Any) -> bool:
        self.timeouts.append(timeout)
        if len(self.timeouts) == 1:
            self.feed.entry("u-policy", DOMAIN, POLICY)  # what python-ldap's callback does
            return True
        time.sleep(timeout)  # nothing more from the server
        raise ldap.TIMEOUT


class Host:
    def __init__(self, feed: ReplicaFeed, stop: threading.Event) -> None:
        self.feed, self.stop = feed, stop

    def on_connected(self, uri: str | None) -> None: ...

    def on_level_with(self, uri: str) -> None: ...

    def commit(self) -> None:
        self.feed.flush()
        self.stop.set()

    def housekeeping(self) -> None: ...


def test_a_change_in_the_persist_phase_is_committed_after_delay_not_the_poll_timeout(
    tmp_path: Path,
) -> None:
    settings = config.parse(f"Directory ldap://127.0.0.1:9/{BASE}\n", "test.conf")
    assert settings.ldap is not None
    feed = ReplicaFeed(ReplicaStore(tmp_path / DATABASE, "ldap://127.0.0.1:9 " + BASE))
    stop = threading.Event()
    consumer = Consumer(LdapBackend(settings.ldap), Host(feed, stop), stop, 10.0)
    server = Server(feed)
    end = consumer._persist(server, feed)
    assert end.why is Ended.STOPPED and feed.waiting == 0  # committed
    assert server.timeouts[0] == POLL_TIMEOUT  # nothing waited yet
    assert all(timeout <= DELAY for timeout in server.timeouts[1:]), server.timeouts
    assert len(feed.store) == 1
