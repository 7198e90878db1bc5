"""The milter's Prometheus metrics: defined once here, counted where things happen.

Every part counts into these process-wide objects whether or not anything
serves them (an increment costs well under a microsecond);
``MetricsSocket`` makes :mod:`ldapdkim.milter.monitor` serve them at
``/metrics``, with the figures read at scrape time (sessions, replica) and
prometheus_client's process metrics.

Names follow Prometheus' conventions: ``ldapdkim_`` prefix, ``_total`` for
counters, base units (seconds).  Label values are closed sets, never
anything taken from a message (a From domain would make the series unbounded).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

import prometheus_client
import prometheus_client.metrics
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, values

from ldapdkim.model import DkimResult, NotSealedReason, NotSignedReason, Outcome

# No ``*_created`` series beside every counter: they double what is scraped and
# say nothing that process_start_time_seconds does not.
if hasattr(prometheus_client, "disable_created_metrics"):  # 0.17 and later
    prometheus_client.disable_created_metrics()
else:  # Debian 12's 0.16 has only the module flag
    prometheus_client.metrics._use_created = False

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


# The series are module attributes that :func:`use_multiprocess` makes anew: count
# through ``metrics.NAME``, never a name imported from here.
MESSAGES_SIGNED: Counter
MESSAGES_VERIFIED: Counter
MESSAGES_NOT_SIGNED: Counter
ACTIONS: Counter
SIGNATURES_MADE: Counter
SIGNATURES_VERIFIED: Counter
ERRORS: Counter
LDAP_SEARCHES: Histogram
CACHE_LOOKUPS: Counter
DNS_QUERIES: Histogram
ARC_CHAINS_VERIFIED: Counter
ARC_SEALS: Counter
ARC_NOT_SEALED: Counter

ARC_RESULTS = ("none", "pass", "fail")
"""The cv values of an ARC chain (RFC 8617 §4.1.3), the label values of the ARC series."""


_series: list[Counter | Histogram] = []
"""What :func:`_define` made last, for :func:`use_multiprocess` to take out of REGISTRY."""

_Series = TypeVar("_Series", Counter, Histogram)
_children: dict[tuple[Counter | Histogram, tuple[str, ...]], Counter | Histogram] = {}
"""The labelled series :func:`labelled` handed out; bounded, as label values are closed sets."""


def labelled(series: _Series, *values: str) -> _Series:
    """``series.labels(*values)``, looked up once (per-message paths count several times).

    ``values`` in the order of the series' label names, from closed sets only.
    """
    key = (series, values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = series.labels(*values)
    return child  # type: ignore[return-value]


def _define(registry: CollectorRegistry | None) -> None:
    """(Re)make every series, registered in ``registry`` (None: in none)."""
    global MESSAGES_SIGNED, MESSAGES_VERIFIED, MESSAGES_NOT_SIGNED, ACTIONS, SIGNATURES_MADE
    global SIGNATURES_VERIFIED, ERRORS, LDAP_SEARCHES, CACHE_LOOKUPS, DNS_QUERIES
    global ARC_CHAINS_VERIFIED, ARC_SEALS, ARC_NOT_SEALED
    MESSAGES_SIGNED = Counter("ldapdkim_messages_signed", "Messages signed.", registry=registry)
    MESSAGES_VERIFIED = Counter(
        "ldapdkim_messages_verified",
        "Messages verified, by their DKIM result: pass when a signature passed, none "
        "when there was none, else the first signature's result.",
        ["result"],
        registry=registry,
    )
    MESSAGES_NOT_SIGNED = Counter(
        "ldapdkim_messages_not_signed",
        "Messages to sign that were not signed, by reason.",
        ["reason"],
        registry=registry,
    )
    ACTIONS = Counter(
        "ldapdkim_actions",
        "On-* actions taken, by outcome keyword and action.",
        ["outcome", "action"],
        registry=registry,
    )
    SIGNATURES_MADE = Counter(
        "ldapdkim_signatures_made",
        "DKIM-Signature fields added, by algorithm.",
        ["algorithm"],
        registry=registry,
    )
    SIGNATURES_VERIFIED = Counter(
        "ldapdkim_signatures_verified",
        "Signatures checked, by algorithm (as the signature names it, 'unknown' when it "
        "names none ldapdkim knows) and result.",
        ["algorithm", "result"],
        registry=registry,
    )
    ERRORS = Counter(
        "ldapdkim_internal_errors",
        "Callbacks that failed unexpectedly (On-InternalError).",
        registry=registry,
    )
    LDAP_SEARCHES = Histogram(
        "ldapdkim_ldap_search_seconds",
        "LDAP searches sent to a server and their latency, by result.",
        ["result"],
        buckets=_LATENCY_BUCKETS,
        registry=registry,
    )
    CACHE_LOOKUPS = Counter(
        "ldapdkim_cache_lookups",
        "Signing-identity lookups by how the cache answered: hit, miss (asked the "
        "directory), stale (the directory failed; an older answer was served).",
        ["result"],
        registry=registry,
    )
    DNS_QUERIES = Histogram(
        "ldapdkim_dns_query_seconds",
        "DNS key lookups (answers from the resolver's cache included) and their "
        "latency, by result (answer, nxdomain, timeout, error).",
        ["result"],
        buckets=_LATENCY_BUCKETS,
        registry=registry,
    )
    ARC_CHAINS_VERIFIED = Counter(
        "ldapdkim_arc_chains_verified",
        "ARC chains checked (ARCVerify, or before sealing), by chain validation result: "
        "none when the message had no chain.",
        ["cv"],
        registry=registry,
    )
    ARC_SEALS = Counter(
        "ldapdkim_arc_seals",
        "ARC sets added (ARCSeal), by the cv= of the new ARC-Seal.",
        ["cv"],
        registry=registry,
    )
    ARC_NOT_SEALED = Counter(
        "ldapdkim_arc_not_sealed",
        "Messages ARCSeal chose to seal that were not sealed, by reason.",
        ["reason"],
        registry=registry,
    )
    _series[:] = [
        MESSAGES_SIGNED, MESSAGES_VERIFIED, MESSAGES_NOT_SIGNED, ACTIONS, SIGNATURES_MADE,
        SIGNATURES_VERIFIED, ERRORS, LDAP_SEARCHES, CACHE_LOOKUPS, DNS_QUERIES,
        ARC_CHAINS_VERIFIED, ARC_SEALS, ARC_NOT_SEALED,
    ]  # fmt: skip
    _children.clear()
    _zero_series()


def count_action(outcome: Outcome, action: str) -> None:
    """Count an ``On-*`` action taken."""
    labelled(ACTIONS, outcome.keyword, action).inc()


def count_not_signed(reason: NotSignedReason) -> None:
    """Count a message to sign that was not signed."""
    labelled(MESSAGES_NOT_SIGNED, reason.value).inc()


def _zero_series() -> None:
    """Show every known series from the start, at 0: a rate over a series that appears
    only at its first event misses that event."""
    for reason in NotSignedReason:
        MESSAGES_NOT_SIGNED.labels(reason=reason.value)
    for dkim_result in DkimResult:
        MESSAGES_VERIFIED.labels(result=dkim_result.value)
    for cache_result in ("hit", "miss", "stale"):
        CACHE_LOOKUPS.labels(result=cache_result)
    for search_result in ("ok", "error"):
        LDAP_SEARCHES.labels(result=search_result)
    for dns_result in ("answer", "nxdomain", "timeout", "error"):
        DNS_QUERIES.labels(result=dns_result)
    for cv in ARC_RESULTS:
        ARC_CHAINS_VERIFIED.labels(cv=cv)
        ARC_SEALS.labels(cv=cv)
    for not_sealed in NotSealedReason:
        ARC_NOT_SEALED.labels(reason=not_sealed.value)


_define(REGISTRY)


def use_multiprocess(directory: Path) -> None:
    """Count into files in ``directory`` from now on, one per process, for a supervisor
    to add up across its workers (prometheus_client's multiprocess mode).

    Called once, before the workers are forked; each worker then writes files of its
    own pid.  The series leave the default registry: the supervisor reads the files.
    """
    for series in _series:
        REGISTRY.unregister(series)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call,unused-ignore]
    _define(None)
