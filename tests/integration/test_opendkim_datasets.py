"""Host lists decide alike in OpenDKIM and ldapdkim: generated lists, generated clients.

Hypothesis writes an InternalHosts file (addresses and networks, some
negated, in any order; or host names and parent domains, some negated) and
a handful of clients; both milters get the same file, and every client's
message must be signed by both or by neither (the whole decision is
compared).  A list that mixes names and addresses with an exclusion is left
out: that is a declared difference (docs/reference/opendkim-differences.md).

``LDAPDKIM_FUZZ_EXAMPLES`` sets how many lists (default 10 in the suite;
``bench/differential_datasets.sh`` runs more).
"""

from __future__ import annotations

import ipaddress
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.keywordsite import OUTSIDE, Site, base, open_site, text
from harness.milterclient import Transaction
from harness.milterpair import MilterPair
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with open_site() as opened:
        yield opened


EXAMPLES = int(os.environ.get("LDAPDKIM_FUZZ_EXAMPLES", "10"))
REPEATABLE = "LDAPDKIM_FUZZ_EXAMPLES" not in os.environ
"""The suite's slice is the same every run; a longer run explores new lists."""
_numbers = itertools.count()

_prefixes = st.sampled_from([8, 12, 16, 20, 24, 28, 32])


@st.composite
def networks(draw: st.DrawFn) -> str:
    prefix = draw(_prefixes)
    address = draw(st.integers(0, 2**24 - 1)) | (10 << 24)
    network = ipaddress.ip_network((address, prefix), strict=False)
    shown = str(network.network_address) if prefix == 32 else str(network)
    return ("!" if draw(st.booleans()) else "") + shown


@st.composite
def address_case(draw: st.DrawFn) -> tuple[list[str], list[tuple[str, str]]]:
    entries = draw(st.lists(networks(), min_size=1, max_size=6))
    clients = []
    for entry in entries:  # an address inside each network, and its first one
        network = ipaddress.ip_network(entry.lstrip("!"))
        offset = draw(st.integers(0, network.num_addresses - 1))
        clients.append((str(network.network_address + offset), "unknown"))
        clients.append((str(network.network_address), "unknown"))
    clients.append((OUTSIDE, "unknown"))
    return entries, clients


_labels = st.sampled_from(["a", "b", "mx", "relay"])


@st.composite
def name_case(draw: st.DrawFn) -> tuple[list[str], list[tuple[str, str]]]:
    domains = ["example.com", "mail.example.com", "example.net"]
    entries = []
    for _ in range(draw(st.integers(1, 5))):
        domain = draw(st.sampled_from(domains))
        shape = draw(st.sampled_from(["host", "parent"]))
        name = f"{draw(_labels)}.{domain}" if shape == "host" else f".{domain}"
        entries.append(("!" if draw(st.booleans()) else "") + name)
    clients = [
        (OUTSIDE, f"{label}.{domain}")
        for label, domain in draw(
            st.lists(st.tuples(_labels, st.sampled_from(domains)), min_size=3, max_size=8)
        )
    ]
    return entries, clients


def _pair(site: Site, workdir: Path, hosts: Path) -> MilterPair:
    lines = [line for line in base(site) if not line.startswith("InternalHosts")]
    return MilterPair(workdir, [*lines, f"InternalHosts file:{hosts}"], dns_port=site.dns.port)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=REPEATABLE,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=st.one_of(address_case(), name_case()))
def test_generated_host_lists_decide_alike(
    site: Site, case: tuple[list[str], list[tuple[str, str]]]
) -> None:
    entries, clients = case
    workdir = site.root / f"dataset-{next(_numbers)}"
    workdir.mkdir()
    hosts = workdir / "internal-hosts"
    hosts.write_text("\n".join(entries) + "\n")
    lines = [line for line in base(site) if not line.startswith("InternalHosts")]
    with MilterPair(
        workdir, [*lines, f"InternalHosts file:{hosts}"], dns_port=site.dns.port
    ) as pair:
        for address, name in clients:
            transaction = Transaction(text(), client_address=address, client_name=name)
            opendkim, ldapdkim = pair.play(transaction)
            assert ldapdkim == opendkim, (entries, address, name)


def test_the_lists_are_files_both_programs_read(site: Site) -> None:
    """The generated file is a data set both read: a list that signs for its client."""
    workdir = site.root / "dataset-sanity"
    workdir.mkdir()
    hosts = workdir / "internal-hosts"
    hosts.write_text("10.0.0.0/8\n!10.9.0.0/16\n")
    lines = [line for line in base(site) if not line.startswith("InternalHosts")]
    with MilterPair(
        workdir, [*lines, f"InternalHosts file:{hosts}"], dns_port=site.dns.port
    ) as pair:
        signed = [
            len(d.signatures)
            for address in ("10.1.2.3", "10.9.1.1")
            for d in pair.play(Transaction(text(), client_address=address))
        ]
    assert signed == [1, 1, 0, 0]
