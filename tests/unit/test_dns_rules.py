"""The DNS stage's pure rules, on rdata parsed from zone-file text."""

import dns.rdata
import pytest

from checks.stages.dns import MX, MXSet, mx_literal, parse_mailconf, parse_mx, parse_srv


def rdata(rdtype: str, *texts: str):
    return [dns.rdata.from_text("IN", rdtype, t) for t in texts]


def test_parse_mx_orders_by_preference_then_name_and_lowercases() -> None:
    records = parse_mx(rdata("MX", "20 B.example.", "10 z.example.", "10 a.example."))
    assert records == (MX(10, "a.example"), MX(10, "z.example"), MX(20, "b.example"))


def test_null_mx_is_an_empty_host() -> None:
    records = parse_mx(rdata("MX", "0 ."))
    assert records == (MX(0, ""),)
    assert MXSet(records).null and MXSet(records).hosts == ()
    mixed = MXSet(parse_mx(rdata("MX", "0 .", "10 mx.example.")))
    assert not mixed.null and mixed.hosts == (MX(10, "mx.example"),)


@pytest.mark.parametrize(
    ("host", "literal"),
    [
        ("192.0.2.25", "192.0.2.25"),
        ("[192.0.2.25]", "192.0.2.25"),
        ("mx.example", None),
        ("1.2.3", None),
        ("192.0.2.25.example", None),
    ],
)
def test_mx_literal(host: str, literal: str | None) -> None:
    assert mx_literal(host) == literal


def test_parse_srv_orders_by_priority_then_weight() -> None:
    targets = parse_srv(
        "_imaps._tcp",
        rdata("SRV", "10 5 993 b.example.", "0 1 993 c.example.", "10 50 993 a.example."),
    )
    assert [(t.priority, t.weight, t.host) for t in targets] == [
        (0, 1, "c.example"),
        (10, 50, "a.example"),
        (10, 5, "b.example"),
    ]
    assert parse_srv("_pop3._tcp", rdata("SRV", "0 0 0 ."))[0].host == ""


@pytest.mark.parametrize(
    ("txts", "urls", "problem"),
    [
        (["v=spf1 -all"], [], None),
        (
            ["mailconf=https://autoconfig.example.com/mail/config-v1.1.xml"],
            ["https://autoconfig.example.com/mail/config-v1.1.xml"],
            None,
        ),
        (["MAILCONF=https://a.example/x"], ["https://a.example/x"], None),
        (["mailconf=http://a.example/x"], ["http://a.example/x"], "must be https"),
        (["mailconf=a.example/x"], ["a.example/x"], "no scheme"),
        (["mailconf=https:///x"], ["https:///x"], "no host"),
        (
            ["mailconf=https://a.example/1", "mailconf=https://b.example/2"],
            ["https://a.example/1", "https://b.example/2"],
            "exactly one",
        ),
    ],
)
def test_parse_mailconf(txts: list[str], urls: list[str], problem: str | None) -> None:
    found, problems = parse_mailconf(txts)
    assert found == urls
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems), problems
