"""ldapdkim, Perl Mail::DKIM and OpenDKIM judge the same generated cases alike, or the
difference is one that ``harness.differential.EXPLAINED`` explains by an RFC clause.

A short slice of ``bench/differential.py`` (which runs 100 000 cases).
"""

from __future__ import annotations

import pytest
from harness import differential
from harness.verifiers import require_mail_dkim_ed25519, require_opendkim

CASES = 600


@pytest.fixture(scope="module")
def report() -> differential.Report:
    require_mail_dkim_ed25519()
    require_opendkim()
    return differential.run(CASES, seed=20261203, batch_size=300)


def test_every_disagreement_is_explained_by_an_rfc_clause(report: differential.Report) -> None:
    assert report.cases == CASES
    assert report.unexplained() == {}, report.examples


def test_ldapdkim_gives_the_verdict_the_rfcs_require_whatever_the_others_say(
    report: differential.Report,
) -> None:
    """Catches what all three verifiers get wrong alike (a From added above a signed one)."""
    assert report.wrong == {}, {k: report.examples.get((*k, "-", "-")) for k in report.wrong}
    judged = {kind for kind, _ in report.verdicts}
    assert {"dup-from", "third-from", "no-from", "sig-fws", "sig-fws-b", "key-fws",
            "from-cfws"} <= judged  # fmt: skip


def test_ldapdkim_passes_nothing_both_others_refuse_unless_explained(
    report: differential.Report,
) -> None:
    lone_passes = {k for k in report.classes if k[1] == "pass" and "pass" not in k[2:]}
    assert lone_passes <= {("key-pkcs1", "pass", "error", "error")}


def test_most_cases_are_judged_alike(report: differential.Report) -> None:
    """The generator's mutations are mostly ones the RFC is clear about."""
    assert report.agree > CASES // 2
