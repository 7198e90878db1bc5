"""The replica's state rules, row by row, without a server (:mod:`.replica.state`).

A row reads (wanted, loaded, connected, refused, age) → (mode, staleness,
verdict), with DirectoryMaxStale ``MAX_STALE``; age is the seconds since the
last contact (None: never in touch).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from ldapdkim.directory.replica.state import Link, LookupMode, ReplicaState, Verdict, status
from ldapdkim.directory.replica.status import parse_status
from ldapdkim.directory.replica.store import Meta
from ldapdkim.model import DirectorySync

NOW = 1_800_000_000.0
MAX_STALE = 60.0
URI = "ldap://ldap1.example.com"
OTHER = "ldap://ldap2.example.com"

AUTO, YES, NO = DirectorySync.AUTO, DirectorySync.YES, DirectorySync.NO
SYNC, LOOKUP = LookupMode.SYNC, LookupMode.LOOKUP
SERVE, ASK, NOT_LOADED, STALE = Verdict.SERVE, Verdict.LOOKUP, Verdict.NOT_LOADED, Verdict.STALE
UP, DOWN = URI, None
T, F = True, False


def rule(name: str, *row: object) -> Any:
    return pytest.param(*row, id=name)


# fmt: off
RULES = [
    #    id                          wanted loaded connected refused age  mode  staleness verdict
    rule("no-never-loaded",           NO,   F, DOWN, F, None,  LOOKUP, None,  ASK),
    rule("no-ignores-a-replica",      NO,   T, UP,   F, 0.0,   LOOKUP, 0.0,   ASK),
    rule("no-never-stale",            NO,   T, DOWN, F, 999.0, LOOKUP, 999.0, ASK),
    rule("auto-never-loaded",         AUTO, F, DOWN, F, None,  LOOKUP, None,  ASK),
    rule("auto-refreshing",           AUTO, F, UP,   F, None,  LOOKUP, None,  ASK),
    rule("auto-current",              AUTO, T, UP,   F, 5.0,   SYNC,   0.0,   SERVE),
    rule("auto-refused",              AUTO, T, UP,   T, 5.0,   LOOKUP, 0.0,   ASK),
    rule("auto-refused-never-loaded", AUTO, F, DOWN, T, None,  LOOKUP, None,  ASK),
    rule("auto-disconnected-fresh",   AUTO, T, DOWN, F, 30.0,  SYNC,   30.0,  SERVE),
    rule("auto-exactly-max-stale",    AUTO, T, DOWN, F, 60.0,  SYNC,   60.0,  SERVE),
    rule("auto-past-max-stale",       AUTO, T, DOWN, F, 60.5,  SYNC,   60.5,  STALE),
    rule("auto-loaded-no-contact",    AUTO, T, DOWN, F, None,  SYNC,   None,  SERVE),
    rule("auto-contact-ahead",        AUTO, T, DOWN, F, -5.0,  SYNC,   0.0,   SERVE),
    rule("yes-never-loaded",          YES,  F, DOWN, F, None,  SYNC,   None,  NOT_LOADED),
    rule("yes-refreshing",            YES,  F, UP,   F, 0.0,   SYNC,   0.0,   NOT_LOADED),
    rule("yes-refused",               YES,  F, DOWN, T, None,  SYNC,   None,  NOT_LOADED),
    rule("yes-refused-loaded",        YES,  T, DOWN, T, 10.0,  SYNC,   10.0,  SERVE),
    rule("yes-current",               YES,  T, UP,   F, 500.0, SYNC,   0.0,   SERVE),
    rule("yes-exactly-max-stale",     YES,  T, DOWN, F, 60.0,  SYNC,   60.0,  SERVE),
    rule("yes-past-max-stale",        YES,  T, DOWN, F, 61.0,  SYNC,   61.0,  STALE),
]
# fmt: on


def _state(
    wanted: DirectorySync, loaded: bool, connected: str | None, refused: bool, age: float | None
) -> ReplicaState:
    return ReplicaState(wanted, loaded, connected, None if age is None else NOW - age, refused)


@pytest.mark.parametrize(
    ("wanted", "loaded", "connected", "refused", "age", "mode", "staleness", "verdict"), RULES
)
def test_the_state_rules(
    wanted: DirectorySync,
    loaded: bool,
    connected: str | None,
    refused: bool,
    age: float | None,
    mode: LookupMode,
    staleness: float | None,
    verdict: Verdict,
) -> None:
    state = _state(wanted, loaded, connected, refused, age)
    assert (state.mode(), state.staleness(NOW), state.verdict(NOW, MAX_STALE)) == (
        mode,
        staleness,
        verdict,
    )


# fmt: off
MAX_STALE_0 = [
    rule("contact-this-instant", DOWN, 0.0,  SERVE),
    rule("disconnected-at-all",  DOWN, 0.01, STALE),
    rule("connected",            UP,   99.0, SERVE),
]
# fmt: on


@pytest.mark.parametrize(("connected", "age", "verdict"), MAX_STALE_0)
def test_max_stale_0_refuses_as_soon_as_disconnected(
    connected: str | None, age: float, verdict: Verdict
) -> None:
    assert _state(YES, True, connected, False, age).verdict(NOW, 0.0) is verdict


def _meta(*, beat: float | None, uri: str | None = URI) -> Meta:
    return Meta(URI, "csn=1", True, 7, 3, NOW - 120, uri, False, beat)


# fmt: off
WRITER_WORD = [
    rule("writer-heard-from",     NOW - 1.0, URI),
    rule("writer-silent-exactly", NOW - 3.5, None),
    rule("writer-silent",         NOW - 9.0, None),
    rule("writer-gone",           None,      None),
]
# fmt: on


@pytest.mark.parametrize(("beat", "connected"), WRITER_WORD)
def test_a_reader_takes_the_writers_word_while_it_speaks(
    beat: float | None, connected: str | None
) -> None:
    state = ReplicaState.of_meta(AUTO, _meta(beat=beat), NOW, silent=3.5)
    assert state == ReplicaState(AUTO, True, connected, NOW - 120, False)
    assert state.staleness(NOW) == (0.0 if connected else 120.0)


def test_a_link_level_with_a_server_ends_a_refusal_and_remembers_each_server() -> None:
    link = Link().refusal(at=5.0).connected(URI).level_with(URI, NOW - 10).level_with(OTHER, NOW)
    assert (link.refused, link.contact, link.last_uri) == (False, NOW, OTHER)
    assert link.synced == {URI: NOW - 10, OTHER: NOW}
    assert ReplicaState.of_writer(YES, True, link) == ReplicaState(YES, True, URI, NOW, False)


def test_status_has_one_item_per_server_and_reads_back() -> None:
    link = Link().level_with(OTHER, NOW - 100).level_with(URI, NOW - 1).connected(URI)
    state = ReplicaState.of_writer(YES, True, link)
    report = status(
        state, link, [URI, OTHER, "ldap://never"], lookup_uri=None, entries=42,
        started=NOW - 1000, now=NOW,
    )  # fmt: skip
    document = report.document()
    assert document["mode"] == "sync"
    rows = [(s["uri"], s["connected"], s["entries"], s["staleness_s"]) for s in document["servers"]]
    assert rows == [
        (URI, True, 42, 0.0),
        (OTHER, False, 0, 100.0),
        ("ldap://never", False, 0, 0.0),  # the replica's own staleness: connected, 0
    ]
    assert document["servers"][0]["last_sync"] == datetime.fromtimestamp(NOW, UTC).isoformat(
        timespec="seconds"
    )
    assert parse_status(document) == report


def test_status_in_lookup_mode_names_the_lookup_connection() -> None:
    state = ReplicaState.of_writer(NO, False, Link())
    report = status(
        state, Link(), [URI, OTHER], lookup_uri=OTHER, entries=0, started=NOW - 30, now=NOW
    )
    assert report.mode == "lookup"
    assert [(s.connected, s.staleness_s, s.last_sync) for s in report.servers] == [
        (False, 30.0, None),
        (True, 0.0, None),
    ]
