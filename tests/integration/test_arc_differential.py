"""ldapdkim, dkimpy and Perl Mail::DKIM validate the same mutated ARC chains alike, or the
difference is one that ``harness.arc_differential.EXPLAINED`` explains by an RFC clause.

A short slice of ``bench/differential_arc.py`` (which runs 20 000 cases).
"""

from __future__ import annotations

import pytest
from harness import arc_differential
from harness.verifiers import require_mail_dkim_ed25519

CASES = 300


@pytest.fixture(scope="module")
def report() -> arc_differential.Report:
    require_mail_dkim_ed25519()  # the Mail::DKIM whose ARC verdicts EXPLAINED describes
    return arc_differential.run(CASES, seed=20261207, batch_size=150)


def test_every_disagreement_is_explained_by_an_rfc_clause(report: arc_differential.Report) -> None:
    assert report.cases == CASES
    unexplained = report.unexplained()
    assert unexplained == {}, {k: report.examples[k] for k in unexplained}


def test_ldapdkim_gives_the_verdict_rfc_8617_requires_whatever_the_others_say(
    report: arc_differential.Report,
) -> None:
    """Catches what all three get wrong alike, and every Ed25519 chain, which only
    ldapdkim of the three can verify."""
    assert report.wrong == {}, {k: report.examples.get((*k, "-", "-")) for k in report.wrong}
    judged = {kind.partition("@")[0] for kind, _ in report.verdicts}
    assert judged >= {"none", "no-arc", "cv-pass-at-1", "cv-fail-top", "missing-aar",
                      "instance-gap", "duplicate-set", "as-h-tag"}  # fmt: skip
    assert any(kind.endswith("@ed25519") for kind, _ in report.verdicts)


def test_ldapdkim_passes_no_chain_both_others_fail_unless_explained(
    report: arc_differential.Report,
) -> None:
    lone_passes = {k for k in report.classes if k[1] == "pass" and "pass" not in k[2:]}
    assert all(arc_differential.explanation(k) for k in lone_passes), lone_passes


def test_most_cases_are_judged_alike(report: arc_differential.Report) -> None:
    """The mutations are mostly ones RFC 8617 is clear about."""
    assert report.agree > CASES // 2
