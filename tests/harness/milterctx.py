"""The milter in-process, through pymilter's test context: feed it a message, see what it did.

For unit tests of :class:`~ldapdkim.milter.session.DkimMilter`: :func:`feeder`
builds the runtime from configuration lines (no servers: the directory an
LDIF file, DNS a dead port unless the test patches it) and returns a function
that plays one SMTP transaction; :class:`RecordingCtx` keeps the header
changes in order, with their positions, which pymilter's own context does not.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import Milter
from Milter import testctx

from ldapdkim import config
from ldapdkim.milter.daemon import Holder, build_runtime
from ldapdkim.milter.session import DkimMilter


class RecordingCtx(testctx.TestCtx):  # type: ignore[misc]
    """pymilter's TestCtx, recording header changes in order (it keeps no positions)."""

    def __init__(self) -> None:
        super().__init__(logfile="/dev/null")
        self.added: list[tuple[str, str, int]] = []
        self.changed: list[tuple[str, int, str | None]] = []
        self.replies: list[tuple[str, str | None, str | None]] = []

    def addheader(self, field: str, value: str, idx: int) -> None:
        self.added.append((field, value, idx))

    def chgheader(self, field: str, idx: int, value: str | None) -> None:
        self.changed.append((field, idx, value))

    def setreply(self, rcode: str, xcode: str | None, *msg: str) -> None:
        self.replies.append((rcode, xcode, msg[0] if msg else None))

    def headers_named(self, name: str) -> list[str]:
        return [v for f, v, _ in self.added if f == name]

    def _negotiate(self) -> int:
        """Offer every option each time: TestCtx hands the milter its class-wide list, which
        a negotiation that clears options changes for every later context."""
        testctx.TestCtx.default_opts = [Milter.CURR_ACTS, 0x1FFFFF, 0, 0]
        return int(super()._negotiate())

    # As libmilter, and unlike TestCtx: a step without a reply (NOREPLY) goes on; after
    # SKIP the MTA sends no more of the body, then end of message.

    def _data(self) -> int:
        return _going_on(super()._data())

    def _header(self, field: str, value: str) -> int:
        return _going_on(super()._header(field, value))

    def _eoh(self) -> int:
        return _going_on(super()._eoh())

    def _feed_body(self, bfp: io.BytesIO) -> int:
        self.body_chunks = 0
        self.body_skipped = False
        while not self._protocol & Milter.P_NOBODY and (chunk := bfp.read(8192)):
            self.body_chunks += 1
            rc = _going_on(self._priv.body(chunk))
            if rc == Milter.SKIP:
                self.body_skipped = True
                break
            if rc != Milter.CONTINUE:
                return rc
        return int(Milter.CONTINUE)

    def top_down(self) -> list[str]:
        """The added fields' names in the order the message carries them (all inserted at 0)."""
        names: list[str] = []
        for name, _, idx in self.added:
            assert idx == 0, (name, idx)
            names.insert(0, name)
        return names


def _going_on(rc: int) -> int:
    """A step's reply as the MTA acts on it: NOREPLY (none was sent) is CONTINUE."""
    return int(Milter.CONTINUE if rc == Milter.NOREPLY else rc)


def feeder(directory_file: Path, *lines: str) -> Any:
    """feed(message, ...) -> (reply, ctx) for a milter configured with ``lines``.

    Pymilter's test context makes its milter with ``Milter.factory``, which
    ``feed`` sets for the one transaction.  ``feed.holder`` holds the runtime.
    """
    text = "\n".join(
        [
            "Mode sv",
            f"Directory ldif:{directory_file}",
            "AuthservID mx.example.net",
            "Nameservers 127.0.0.1:9",
            "DNSTimeout 0.5",
            *lines,
        ]
    )
    holder = Holder(build_runtime(config.parse(text + "\n", "test.conf")))

    def feed(
        message: bytes,
        *,
        ip: str = "127.0.0.1",
        macros: dict[str, str] | None = None,
        sender: str = "alice@example.com",
        recipients: Sequence[str] = ("bob@example.net",),
    ) -> tuple[int, RecordingCtx]:
        saved = Milter.factory
        Milter.factory = lambda: DkimMilter(holder.current)
        try:
            ctx = RecordingCtx()
            ctx._setsymval("i", "4XyZ1")
            for name, value in (macros or {}).items():
                ctx._setsymval(name, value)
            rc: int = ctx._connect(ip=ip)
            if rc == Milter.CONTINUE:
                rc = ctx._feedFile(io.BytesIO(message), sender, *recipients)
            return rc, ctx
        finally:
            Milter.factory = saved

    feed.holder = holder  # type: ignore[attr-defined]
    return feed
