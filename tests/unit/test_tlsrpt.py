"""SMTP TLS Reporting records (RFC 8460)."""

import pytest

from checks.core.errors import MailcheckError
from checks.rules.tlsrpt import TLSRPTError, TLSRPTRecord, parse_record, select, uri_problem

GOOD = "v=TLSRPTv1; rua=mailto:tlsrpt@example.com"


def test_select_picks_the_record() -> None:
    assert select(["v=spf1 -all", GOOD]) == (GOOD, [])
    assert select([]) == (None, [])


def test_select_several_records_is_a_problem() -> None:
    record, problems = select([GOOD, "v=TLSRPTv1; rua=mailto:b@example.com"])
    assert record is None and "multiple TLS-RPT records (2)" in problems[0]


def test_select_explains_near_misses() -> None:
    record, problems = select(["v=tlsrptv1; rua=mailto:a@example.com"])
    assert record is None and "looks like TLS-RPT but does not start with exactly" in problems[0]


@pytest.mark.parametrize(
    ("text", "rua"),
    [
        (GOOD, ("mailto:tlsrpt@example.com",)),
        (
            "v=TLSRPTv1;rua=https://reports.example.com/tlsrpt;",
            ("https://reports.example.com/tlsrpt",),
        ),
        (
            "v=TLSRPTv1; rua=mailto:a@example.com , https://r.example.net/v1",
            ("mailto:a@example.com", "https://r.example.net/v1"),
        ),
        ("v=TLSRPTv1 ; rua=MAILTO:a@example.com ;", ("MAILTO:a@example.com",)),
    ],
)
def test_valid_records(text: str, rua: tuple[str, ...]) -> None:
    assert parse_record(text) == TLSRPTRecord(text, rua)


def test_extensions_are_kept() -> None:
    record = parse_record(GOOD + "; x-ext=1")
    assert record.extensions == (("x-ext", "1"),) and record.warnings == ()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            "v=TLSRPTv2; rua=mailto:a@example.com",
            "must start with v=TLSRPTv1; it starts with 'v=TLSRPTv2'",
        ),
        ("rua=mailto:a@example.com; v=TLSRPTv1", "it starts with 'rua=mailto:a@example.com'"),
        ("v=tlsrptv1; rua=mailto:a@example.com", "it starts with 'v=tlsrptv1'"),
        ("v=TLSRPTv1 rua=mailto:a@example.com", "v=TLSRPTv1 must be followed by ';'"),
        ("v=TLSRPTv1", "no rua= field: senders have nowhere to send reports"),
        ("v=TLSRPTv1; RUA=mailto:a@example.com", "no rua= field"),
        ("v=TLSRPTv1; rua=", "no rua= field"),
        ("v=TLSRPTv1; rua=tlsrpt@example.com", "rua= has no usable mailto: or https: URI"),
        (
            "v=TLSRPTv1; rua=tlsrpt@example.com",
            "'tlsrpt@example.com' is not a URI (write mailto:tlsrpt@example.com)",
        ),
        (
            "v=TLSRPTv1; rua=http://r.example.com/",
            "uses http:; reports go only to mailto: or https:",
        ),
        ("v=TLSRPTv1; rua=ftp://r.example.com/", "uses ftp:"),
        ("v=TLSRPTv1; rua=mailto:example.com", "is not mailto:local-part@domain"),
        ("v=TLSRPTv1; rua=https:///path", "has no host name"),
    ],
)
def test_invalid_records_raise(text: str, fragment: str) -> None:
    with pytest.raises(TLSRPTError) as caught:
        parse_record(text)
    assert fragment in str(caught.value)


def test_the_error_belongs_to_the_engine_tree() -> None:
    assert issubclass(TLSRPTError, MailcheckError) and issubclass(TLSRPTError, ValueError)


def test_one_bad_address_beside_a_good_one_is_a_warning() -> None:
    record = parse_record("v=TLSRPTv1; rua=http://r.example.com/, mailto:a@example.com")
    assert record.rua == ("mailto:a@example.com",)
    assert record.warnings == (
        "rua= entry 'http://r.example.com/' uses http:; reports go only to mailto: or https: URIs",
    )


@pytest.mark.parametrize(
    ("part", "fragment"),
    [
        ("junk", "'junk' is not a valid name=value field"),
        ("rua=mailto:b@example.com", "rua= appears more than once; senders use the first"),
    ],
)
def test_field_warnings(part: str, fragment: str) -> None:
    record = parse_record(f"{GOOD}; {part}")
    assert record.rua == ("mailto:tlsrpt@example.com",)
    assert record.warnings == (fragment,)


@pytest.mark.parametrize(
    ("entry", "ok"),
    [
        ("mailto:a@example.com", True),
        ("mailto:a@example.com?subject=tls", True),
        ("https://example.com", True),
        ("https://[2001:db8::1]/r", True),
        ("mailto:a@localhost", False),
        ("https://[broken/r", False),
        ("", False),
    ],
)
def test_uri_problem(entry: str, ok: bool) -> None:
    assert (uri_problem(entry) == "") is ok
