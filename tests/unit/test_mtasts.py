"""MTA-STS (RFC 8461): the TXT record, the policy file, MX coverage."""

import pytest

from checks.core.errors import MailcheckError
from checks.rules.mtasts import (
    MAX_POLICY_BYTES,
    MTASTSError,
    Policy,
    STSRecord,
    mx_covered,
    parse_policy,
    parse_txt,
    select,
    uncovered,
)

GOOD = (
    "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmx: *.example.net\r\n"
    "max_age: 604800\r\n"
)


# -- the TXT record ---------------------------------------------------------------------


def test_select_picks_the_record() -> None:
    assert select(["v=spf1 -all", "v=STSv1; id=20240101"]) == ("v=STSv1; id=20240101", [])
    assert select([]) == (None, [])


def test_select_several_records_is_a_problem() -> None:
    record, problems = select(["v=STSv1; id=1", "v=STSv1; id=2"])
    assert record is None and "multiple MTA-STS records (2)" in problems[0]


def test_select_explains_near_misses() -> None:
    record, problems = select(["v=stsv1; id=1"])
    assert record is None
    assert problems == [
        "TXT record 'v=stsv1; id=1' looks like MTA-STS but does not start with exactly "
        "v=STSv1; senders ignore it"
    ]


@pytest.mark.parametrize(
    ("text", "record_id"),
    [
        ("v=STSv1; id=20240101T000000;", "20240101T000000"),
        ("v=STSv1;id=a", "a"),
        ("v=STSv1 ; id=abc ; ", "abc"),
        ("v=STSv1; id=" + "x" * 32, "x" * 32),
    ],
)
def test_valid_txt(text: str, record_id: str) -> None:
    assert parse_txt(text) == STSRecord(text, record_id)


def test_txt_extensions_are_kept() -> None:
    record = parse_txt("v=STSv1; id=1; ext.name=some-value")
    assert record.extensions == (("ext.name", "some-value"),)


def test_txt_duplicate_field_is_a_warning() -> None:
    record = parse_txt("v=STSv1; id=1; id=2")
    assert record.id == "1"
    assert record.warnings == ("id= appears more than once; senders use the first",)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("v=STSv2; id=1", "must start with v=STSv1; it starts with 'v=STSv2'"),
        ("id=1; v=STSv1", "it starts with 'id=1'"),
        ("v=STSv1 id=1", "v=STSv1 must be followed by ';'"),
        ("v=STSv1", "no id= field"),
        ("v=STSv1;", "no id= field"),
        ("v=STSv1; ID=1", "no id= field"),
        ("v=STSv1; id=", "id= must be 1 to 32 letters and digits; it has 0 characters"),
        ("v=STSv1; id=" + "x" * 33, "it has 33 characters"),
        (
            "v=STSv1; id=2024-01-01",
            "id=2024-01-01 must be 1 to 32 letters and digits; it contains '-'",
        ),
        ("v=STSv1; id=a.b_c", "it contains '.' '_'"),
        ("v=STSv1; id=1; junk", "'junk' is not a valid name=value field"),
    ],
)
def test_invalid_txt_raises(text: str, fragment: str) -> None:
    with pytest.raises(MTASTSError) as caught:
        parse_txt(text)
    assert fragment in str(caught.value)


def test_the_error_belongs_to_the_engine_tree_and_lists_every_problem() -> None:
    assert issubclass(MTASTSError, MailcheckError) and issubclass(MTASTSError, ValueError)
    with pytest.raises(MTASTSError) as caught:
        parse_txt("v=STSv1; junk; id=!")
    assert len(caught.value.problems) == 2
    assert str(caught.value) == "; ".join(caught.value.problems)


# -- the policy file ---------------------------------------------------------------------


def test_valid_policy_with_crlf() -> None:
    assert parse_policy(GOOD) == Policy("enforce", 604800, ("mx1.example.com", "*.example.net"))


def test_lf_lines_and_no_final_newline_are_fine() -> None:
    body = GOOD.replace("\r\n", "\n").rstrip("\n")
    assert parse_policy(body) == parse_policy(GOOD)


def test_field_order_does_not_matter_and_extensions_are_kept() -> None:
    policy = parse_policy(
        "max_age: 604800\nmx: mx.example.com\nx-note: hi\nmode: testing\nversion: STSv1"
    )
    assert (policy.mode, policy.mx, policy.extensions) == (
        "testing",
        ("mx.example.com",),
        (("x-note", "hi"),),
    )
    assert policy.warnings == ("unknown field 'x-note' (senders ignore it)",)


def test_mode_none_needs_no_mx() -> None:
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 0\n") == Policy("none", 0, ())


@pytest.mark.parametrize(("max_age", "ok"), [("0", True), ("31557600", True), ("31557601", False)])
def test_max_age_bounds(max_age: str, ok: bool) -> None:
    body = f"version: STSv1\nmode: testing\nmx: mx.example.com\nmax_age: {max_age}\n"
    if ok:
        assert parse_policy(body).max_age == int(max_age)
    else:
        with pytest.raises(MTASTSError, match="max_age: 31557601 is over the limit of 31557600"):
            parse_policy(body)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("mode: enforce\nmx: a.example\nmax_age: 86400", "no version: field"),
        (
            "version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 86400",
            "version: STSv2 must be STSv1",
        ),
        (
            "version: stsv1\nmode: enforce\nmx: a.example\nmax_age: 86400",
            "version: stsv1 must be STSv1",
        ),
        ("version: STSv1\nmx: a.example\nmax_age: 86400", "no mode: field"),
        (
            "version: STSv1\nmode: Enforce\nmx: a.example\nmax_age: 86400",
            "mode: Enforce must be enforce, testing or none",
        ),
        ("version: STSv1\nmode: report\nmx: a.example\nmax_age: 86400", "mode: report must be"),
        ("version: STSv1\nmode: enforce\nmx: a.example", "no max_age: field"),
        (
            "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1d",
            "max_age: 1d is not a whole number",
        ),
        (
            "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1",
            "max_age: -1 is not a whole number",
        ),
        ("version: STSv1\nmode: enforce\nmax_age: 86400", "no mx: field; enforce and testing need"),
        ("version: STSv1\nmode: testing\nmax_age: 86400", "no mx: field"),
        (
            "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 86400\nfoo",
            "line 5 'foo' is not 'name: value'",
        ),
        (
            "version: STSv1\nMode: enforce\nmx: a.example\nmax_age: 86400",
            "no mode: field ('Mode' is not it",
        ),
        (
            "version: STSv1\nmode: enforce\nmx: a.example\nmax-age: 86400",
            "no max_age: field ('max-age' is not it",
        ),
        ("", "no version: field"),
    ],
)
def test_invalid_policies_raise(body: str, fragment: str) -> None:
    with pytest.raises(MTASTSError) as caught:
        parse_policy(body)
    assert any(fragment in p for p in caught.value.problems), caught.value.problems


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(MTASTSError) as caught:
        parse_policy("version: 2\nmode: on\nmax_age: forever\n")
    assert len(caught.value.problems) == 4  # version, mode, max_age, mx


def test_size_bound() -> None:
    padding = "x-pad: " + "a" * (MAX_POLICY_BYTES - len(GOOD) - 8) + "\n"
    assert len((GOOD + padding).encode()) == MAX_POLICY_BYTES
    parse_policy(GOOD + padding)
    with pytest.raises(MTASTSError, match=f"the policy is {MAX_POLICY_BYTES + 1} bytes"):
        parse_policy(GOOD + padding + "x")


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ("mode: testing\n", "mode: appears more than once; senders use the first (mode: enforce)"),
        (
            "mx: mx*.example.com\n",
            "mx: mx*.example.com is not a host name or *.domain; it matches no MX",
        ),
        ("mx: *.*.example.com\n", "mx: *.*.example.com is not a host name"),
        ("mx: example\n", "mx: example is not a host name"),
        ("mx: mx.example.com.\n", "mx: mx.example.com. is not a host name"),
        ("foo: bar\n", "unknown field 'foo'"),
    ],
)
def test_policy_warnings(extra: str, fragment: str) -> None:
    policy = parse_policy(GOOD + extra)
    assert policy.mode == "enforce"
    assert any(fragment in w for w in policy.warnings), policy.warnings


def test_interior_empty_line_is_a_warning() -> None:
    policy = parse_policy("version: STSv1\n\nmode: enforce\nmx: a.example\nmax_age: 604800\n\n\n")
    assert policy.warnings == ("line 2 is empty; strict senders reject the policy",)


@pytest.mark.parametrize(
    ("mode", "max_age", "warned"),
    [("enforce", 604799, True), ("enforce", 604800, False), ("testing", 3600, False)],
)
def test_short_max_age_is_a_warning_only_when_enforced(
    mode: str, max_age: int, warned: bool
) -> None:
    policy = parse_policy(f"version: STSv1\nmode: {mode}\nmx: a.example\nmax_age: {max_age}\n")
    assert bool(policy.warnings) is warned
    if warned:
        assert policy.warnings[0].startswith(f"max_age: {max_age} is under a week")


def test_mx_patterns_are_lower_cased() -> None:
    assert (
        parse_policy(GOOD.replace("mx1.example.com", "MX1.Example.COM")).mx[0] == "mx1.example.com"
    )


# -- MX coverage -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "host", "covered"),
    [
        ("mx.example.com", "mx.example.com", True),
        ("mx.example.com", "MX.Example.com.", True),
        ("mx.example.com", "mx2.example.com", False),
        ("mx.example.com", "a.mx.example.com", False),
        ("*.example.com", "mx.example.com", True),
        ("*.example.com", "MX1.EXAMPLE.COM.", True),
        ("*.example.com", "a.b.example.com", False),  # exactly one label
        ("*.example.com", "example.com", False),
        ("*.example.com", ".example.com", False),
        ("*.example.com", "mx.example.net", False),
        ("*.example.com", "mxexample.com", False),
    ],
)
def test_mx_covered(pattern: str, host: str, covered: bool) -> None:
    assert mx_covered(pattern, host) is covered


def test_uncovered() -> None:
    policy = parse_policy(GOOD)
    hosts = ["mx1.example.com", "mx2.example.com", "in.example.net", "a.in.example.net"]
    assert uncovered(policy, hosts) == ["mx2.example.com", "a.in.example.net"]
    assert uncovered(policy, []) == []
