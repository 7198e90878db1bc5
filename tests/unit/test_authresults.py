"""Our Authentication-Results field is the text the ``authres`` package writes for it."""

from __future__ import annotations

import authres
from hypothesis import given
from hypothesis import strategies as st

from ldapdkim.model import DkimResult, Failure, VerifyResult
from ldapdkim.signing import authresults

# Single-line text of any kind: values that need quoting, quotes, backslashes, '@',
# parentheses (comments), non-ASCII (reasons).
TEXT = st.text(st.characters(blacklist_categories=("Cs", "Zl", "Zp", "Cc")), max_size=30)
PLAIN = st.sampled_from(["", "example.com", "s1", "rsa-sha256", "abc+/=AB", "a b", 'q"\\'])


def _with_authres(authserv_id: str, results: list[VerifyResult]) -> str:
    """The value as ``authres`` renders it (how ldapdkim wrote it before)."""
    clauses = []
    for r in results:
        properties = []
        if r.signature_prefix:
            properties.append(
                authres.AuthenticationResultProperty("header", "b", r.signature_prefix)
            )
        clauses.append(
            authres.DKIMAuthenticationResult(
                result=r.result.value,
                result_comment=authresults._comment(r.reason) or None,
                header_d=r.domain or None,
                header_i=r.identity or None,
                header_s=r.selector or None,
                header_a=r.algorithm or None,
                properties=properties or None,
            )
        )
    if not clauses:
        clauses = [authres.DKIMAuthenticationResult(result=DkimResult.NONE.value)]
    header = authres.AuthenticationResultsHeader(authserv_id=authserv_id, results=clauses)
    return str(header).split(":", 1)[1].strip()


RESULTS = st.builds(
    VerifyResult,
    st.sampled_from(list(DkimResult)),
    st.one_of(PLAIN, TEXT),
    st.one_of(PLAIN, TEXT),
    st.one_of(PLAIN, TEXT),
    st.one_of(PLAIN, TEXT),
    st.one_of(PLAIN, TEXT),
    st.one_of(st.just(""), st.just("alice@example.com"), TEXT),
    failure=st.sampled_from(list(Failure)),
)


@given(st.sampled_from(["mx.example.net", "MX.Example.NET"]), st.lists(RESULTS, max_size=4))
def test_build_writes_what_authres_writes(authserv_id: str, results: list[VerifyResult]) -> None:
    assert authresults.build(authserv_id, results) == _with_authres(authserv_id, results)


def test_a_pass_reads_as_before() -> None:
    result = VerifyResult(
        DkimResult.PASS,
        "example.com",
        "s1",
        "rsa-sha256",
        "",
        "abcd+/EF",
        "@example.com",
        failure=Failure.NONE,
    )
    assert authresults.build("mx.example.net", [result]) == (
        'mx.example.net; dkim=pass header.b="abcd+/EF" header.d=example.com '
        "header.i=@example.com header.a=rsa-sha256 header.s=s1"
    )
    assert authresults.build("mx.example.net", []) == "mx.example.net; dkim=none"
