"""RFC 8617 §4.1.1: comments and folding white space (CFWS) may surround the AAR's i=.

Found by the ARC differential (``bench/differential_arc.py``, mutation
``aar-cfws``): an AAR written ``i=1 (hop one);`` had no instance for ldapdkim,
whose chain then failed, while dkimpy and Mail::DKIM passed it.
"""

from __future__ import annotations

import pytest
from harness.arcforge import forge_chain, keys

from ldapdkim.signing.arc import ChainValidation, verify_chain


@pytest.mark.parametrize(
    "written",
    [
        "i=1 (hop one);",
        "(instance) i=1;",
        "i = (one) 1 ;",
        "i=1 (a (nested \\) one) comment);",
        "i=\r\n 1\r\n (folded) ;",
    ],
)
def test_the_aar_instance_may_carry_comments_and_folds(written: str) -> None:
    def tweak(instance: int, kind: str, text: str) -> str:
        return text.replace("i=1;", written) if kind == "aar" else text

    chain = forge_chain(1, tweak=tweak)
    verdict = verify_chain(chain.headers, chain.body, keys(), timeout=2)
    assert verdict.cv is ChainValidation.PASS, (written, verdict.reason)


@pytest.mark.parametrize("written", ["i=1 (unclosed;", "(c) mx; i=1;", "i=1 ((( too deep ))) ;"])
def test_a_comment_that_does_not_close_or_hides_the_instance_leaves_the_aar_without_one(
    written: str,
) -> None:
    def tweak(instance: int, kind: str, text: str) -> str:
        return text.replace("i=1;", written) if kind == "aar" else text

    chain = forge_chain(1, tweak=tweak)
    verdict = verify_chain(chain.headers, chain.body, keys(), timeout=2)
    assert verdict.cv is ChainValidation.FAIL and "ARC-Authentication-Results" in verdict.reason
