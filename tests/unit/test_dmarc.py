"""DMARC records (RFC 7489 + DMARCbis tags): selection, parsing, weaknesses, external reports."""

import pytest

from checks.core.catalog import CATALOG
from checks.core.errors import MailcheckError
from checks.rules.dmarc import (
    DMARCError,
    DMARCRecord,
    ReportURI,
    authorizes,
    external_destinations,
    organizational_domain,
    parse_record,
    parse_uri,
    select,
    weaknesses,
)

STRONG = "v=DMARC1; p=reject; rua=mailto:dmarc@example.com"


# -- select ---------------------------------------------------------------------------


def test_select_picks_the_one_dmarc_record_among_other_txt() -> None:
    assert select(["v=spf1 -all", STRONG, "google-site-verification=x"]) == (STRONG, [])


def test_select_without_a_record() -> None:
    assert select([]) == (None, [])
    assert select(["v=spf1 -all"]) == (None, [])


def test_select_several_records_is_a_problem_and_none_applies() -> None:
    record, problems = select([STRONG, "v=DMARC1; p=none"])
    assert record is None
    assert len(problems) == 1 and "multiple DMARC records (2)" in problems[0]


@pytest.mark.parametrize(
    ("txt", "fragment"),
    [
        ("v=dmarc1; p=reject", "must be exactly DMARC1 (capitals); it is 'dmarc1'"),
        ("v=DMARC2; p=reject", "it is 'DMARC2'"),
        (" v=DMARC1; p=reject", "must start with v=DMARC1; it starts with ' v=DMARC1'"),
        ("v=DMARC1 p=reject", "v=DMARC1 must be followed by ';'"),
        ("v=DMARC1p=reject", "v=DMARC1 must be followed by ';'"),
    ],
)
def test_select_explains_near_misses(txt: str, fragment: str) -> None:
    record, problems = select([txt])
    assert record is None
    assert len(problems) == 1 and "looks like DMARC" in problems[0] and fragment in problems[0]


@pytest.mark.parametrize(
    "txt", ["v=DMARC1", "v=DMARC1;", "v = DMARC1 ; p=none", "v=DMARC1;p=none", "v=DMARC1\t;p=none"]
)
def test_select_accepts_the_version_with_spacing_the_grammar_allows(txt: str) -> None:
    assert select([txt]) == (txt, [])


def test_select_ignores_lookalike_versions() -> None:
    assert select(["v=DMARC10; p=none"])[0] is None


# -- parse_record: the happy path --------------------------------------------------------


def test_minimal_record_takes_the_rfc_defaults() -> None:
    record = parse_record("v=DMARC1; p=none")
    assert record == DMARCRecord(text="v=DMARC1; p=none", p="none")
    assert (record.pct, record.adkim, record.aspf, record.fo, record.rf, record.ri) == (
        100,
        "r",
        "r",
        ("0",),
        ("afrf",),
        86400,
    )
    assert (record.psd, record.t, record.p_assumed) == ("u", "n", False)
    assert record.subdomain_policy == record.nonexistent_policy == "none"


def test_full_record() -> None:
    record = parse_record(
        "v=DMARC1; p=Reject; sp=quarantine; np=reject; pct=50; adkim=s; aspf=S; fo=1:d; "
        "rf=afrf; ri=3600; psd=n; t=y; rua=mailto:a@example.com!10m, mailto:b@example.net; "
        "ruf=mailto:f@example.com!500"
    )
    assert (record.p, record.sp, record.np, record.pct) == ("reject", "quarantine", "reject", 50)
    assert (record.adkim, record.aspf, record.fo, record.ri) == ("s", "s", ("1", "d"), 3600)
    assert (record.psd, record.t) == ("n", "y")
    assert record.rua == (
        ReportURI(
            "mailto:a@example.com!10m", "mailto", "mailto:a@example.com", "example.com", 10 << 20
        ),
        ReportURI("mailto:b@example.net", "mailto", "mailto:b@example.net", "example.net", None),
    )
    assert record.ruf[0].max_size == 500
    assert record.errors == () and record.warnings == ()
    assert record.subdomain_policy == "quarantine" and record.nonexistent_policy == "reject"


def test_nonexistent_policy_falls_back_to_sp_then_p() -> None:
    assert parse_record("v=DMARC1; p=reject; sp=none").nonexistent_policy == "none"
    assert parse_record("v=DMARC1; p=quarantine").nonexistent_policy == "quarantine"


def test_trailing_semicolons_and_spacing_are_fine() -> None:
    record = parse_record("v=DMARC1 ;  p = quarantine ;; ")
    assert record.p == "quarantine" and record.errors == () and record.warnings == ()


def test_the_result_is_frozen() -> None:
    record = parse_record(STRONG)
    with pytest.raises(AttributeError):
        record.p = "none"  # type: ignore[misc]


# -- parse_record: what receivers ignore -------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("v=spf1 -all", "must start with v=DMARC1; it starts with 'v=spf1 -all'"),
        ("p=reject; v=DMARC1", "it starts with 'p=reject'"),
        ("", "it starts with ''"),
        ("v=DMARC1 p=reject", "must be followed by ';'"),
        ("v=dmarc1; p=reject", "exactly DMARC1"),
        ("v=DMARC1", "no p= tag, and no valid rua= address: receivers ignore the whole record"),
        ("v=DMARC1; p=block", "p=block is not none, quarantine or reject, and no valid rua="),
        ("v=DMARC1; p=reject; sp=strict", "sp=strict is not none, quarantine or reject"),
        ("v=DMARC1; rua=dmarc@example.com", "no p= tag, and no valid rua="),
    ],
)
def test_records_receivers_ignore_raise(text: str, fragment: str) -> None:
    with pytest.raises(DMARCError) as caught:
        parse_record(text)
    assert fragment in str(caught.value)


def test_the_error_belongs_to_the_engine_tree() -> None:
    assert issubclass(DMARCError, MailcheckError) and issubclass(DMARCError, ValueError)


def test_ignored_record_names_the_broken_rua_too() -> None:
    with pytest.raises(DMARCError, match=r"'dmarc@example\.com' is not a URI"):
        parse_record("v=DMARC1; rua=dmarc@example.com")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("v=DMARC1; rua=mailto:d@example.com", "no p= tag: receivers act as if the record were"),
        ("v=DMARC1; p=nothing; rua=mailto:d@example.com", "p=nothing is not none, quarantine"),
        ("v=DMARC1; p=reject; sp=x; rua=mailto:d@example.com", "sp=x is not none, quarantine"),
    ],
)
def test_missing_or_invalid_p_with_valid_rua_means_p_none(text: str, fragment: str) -> None:
    record = parse_record(text)
    assert record.p == "none" and record.sp is None and record.p_assumed
    assert len(record.errors) == 1 and fragment in record.errors[0]
    assert "p=none (monitoring only), because rua= is valid" in record.errors[0]


@pytest.mark.parametrize(
    ("tag", "fragment"),
    [
        ("pct=101", "pct=101 is not a whole number from 0 to 100; receivers use pct=100"),
        ("pct=-1", "pct=-1 is not a whole number"),
        ("pct=fifty", "pct=fifty is not a whole number"),
        ("pct=", "pct= is not a whole number"),
        ("ri=1h", "ri=1h is not a whole number from 0 to 4294967295; receivers use ri=86400"),
        ("ri=4294967296", "ri=4294967296 is not a whole number"),
        ("adkim=strict", "adkim=strict must be r or s; receivers use adkim=r"),
        ("aspf=x", "aspf=x must be r or s"),
        ("fo=2", "fo=2 contains '2'; only 0, 1, d and s are defined"),
        ("fo=1:x:y", "contains 'x', 'y'"),
        ("psd=maybe", "psd=maybe must be u or y or n"),
        ("t=true", "t=true must be n or y"),
        ("np=drop", "np=drop is not none, quarantine or reject; receivers ignore it"),
        ("rua=", "rua= is empty"),
        ("garbage", "'garbage' is not a tag=value pair"),
        ("p=none", "p= appears more than once (p=reject, then p=none)"),
    ],
)
def test_bad_values_are_errors_that_name_the_tag(tag: str, fragment: str) -> None:
    record = parse_record(f"v=DMARC1; p=reject; {tag}")
    assert any(fragment in e for e in record.errors), record.errors
    assert record.p == "reject"


@pytest.mark.parametrize(("pct", "ok"), [("0", True), ("100", True), ("101", False)])
def test_pct_bounds(pct: str, ok: bool) -> None:
    record = parse_record(f"v=DMARC1; p=reject; pct={pct}")
    assert (record.errors == ()) is ok
    assert record.pct == (int(pct) if ok else 100)


def test_invalid_values_fall_back_to_defaults() -> None:
    record = parse_record("v=DMARC1; p=reject; pct=x; adkim=x; ri=x; fo=x")
    assert (record.pct, record.adkim, record.ri, record.fo) == (100, "r", 86400, ("0",))


@pytest.mark.parametrize(
    ("tag", "fragment"),
    [
        ("foo=bar", "unknown tag foo= (receivers ignore it)"),
        ("rf=iodef", "rf=iodef: afrf is the only failure-report format defined"),
        ("rua=https://reports.example.com/dmarc", "is not a mailto: URI"),
        (
            "rua=mailto:a@example.com,mailto:b@example.com,mailto:c@example.com",
            "rua= lists 3 addresses; receivers need only send to the first 2",
        ),
    ],
)
def test_oddities_are_warnings_not_errors(tag: str, fragment: str) -> None:
    record = parse_record(f"v=DMARC1; p=reject; {tag}")
    assert record.errors == ()
    assert any(fragment in w for w in record.warnings), record.warnings


def test_p_not_second_is_a_warning() -> None:
    record = parse_record("v=DMARC1; rua=mailto:d@example.com; p=reject")
    assert record.p == "reject"
    assert record.warnings == (
        "p= is not the tag right after v=DMARC1; RFC 7489 requires that order "
        "and some strict receivers ignore the record",
    )


def test_tag_names_are_case_insensitive() -> None:
    record = parse_record("v=DMARC1; P=reject; SP=none")
    assert (record.p, record.sp, record.warnings) == ("reject", "none", ())


def test_remote_text_in_messages_is_made_safe() -> None:
    record = parse_record("v=DMARC1; p=reject; pct=\x1b[31m")
    assert "\x1b" not in record.errors[0] and "\\x1b" in record.errors[0]


# -- report URIs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "size"),
    [
        ("mailto:d@example.com", None),
        ("mailto:d@example.com!0", 0),
        ("mailto:d@example.com!500", 500),
        ("mailto:d@example.com!10k", 10 * 1024),
        ("mailto:d@example.com!10K", 10 * 1024),
        ("mailto:d@example.com!10m", 10 * 1024**2),
        ("mailto:d@example.com!1g", 1024**3),
        ("mailto:d@example.com!2t", 2 * 1024**4),
    ],
)
def test_uri_size_limits(entry: str, size: int | None) -> None:
    uri, problem = parse_uri(entry)
    assert problem == "" and uri is not None
    assert (uri.max_size, uri.domain, uri.address) == (size, "example.com", "mailto:d@example.com")


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ("d@example.com", "is not a URI (write mailto:d@example.com)"),
        ("example.com", "is not a URI"),
        ("mailto:d@example.com!10x", "size limit '10x', which is not digits and k, m, g or t"),
        ("mailto:d@example.com!", "size limit ''"),
        ("mailto:d@example.com!m", "size limit 'm'"),
        ("mailto:example.com", "is not mailto:local-part@domain"),
        ("mailto:@example.com", "is not mailto:local-part@domain"),
        ("mailto:d@", "is not mailto:local-part@domain"),
        ("mailto:d@exa..mple.com", "is not mailto:local-part@domain"),
        ("https://", "has no host name"),
    ],
)
def test_bad_uris(entry: str, fragment: str) -> None:
    uri, problem = parse_uri(entry)
    assert uri is None and fragment in problem


def test_uri_domain_is_lower_case_without_root_dot() -> None:
    uri, _ = parse_uri("MAILTO:D@Reports.Example.COM.")
    assert uri is not None and (uri.scheme, uri.domain) == ("mailto", "reports.example.com")


def test_bad_uri_is_skipped_and_the_rest_kept() -> None:
    record = parse_record("v=DMARC1; p=reject; rua=dmarc@example.com, mailto:ok@example.com")
    assert [u.uri for u in record.rua] == ["mailto:ok@example.com"]
    assert record.errors == (
        "rua= entry 'dmarc@example.com' is not a URI (write mailto:dmarc@example.com); "
        "receivers skip it",
    )


# -- weaknesses ----------------------------------------------------------------------------


def test_a_strong_policy_has_no_weakness() -> None:
    assert weaknesses(parse_record(STRONG), "_dmarc.example.com") == []


@pytest.mark.parametrize(
    ("text", "code", "fragment"),
    [
        ("v=DMARC1; p=none; rua=mailto:d@x.com", "dmarc.policy.none", "p=none at _dmarc.x.com"),
        (
            "v=DMARC1; p=reject; pct=99; rua=mailto:d@x.com",
            "dmarc.pct.partial",
            "p=reject applies to 99% of the mail that fails DMARC; receivers treat the rest "
            "as p=quarantine",
        ),
        (
            "v=DMARC1; p=quarantine; pct=0; rua=mailto:d@x.com",
            "dmarc.pct.partial",
            "treat the rest as p=none",
        ),
        (
            "v=DMARC1; p=reject; t=y; rua=mailto:d@x.com",
            "dmarc.testing",
            "receivers apply p=quarantine, not p=reject",
        ),
        (
            "v=DMARC1; p=reject; sp=none; rua=mailto:d@x.com",
            "dmarc.subdomain.weaker",
            "sp=none at _dmarc.x.com is weaker than p=reject",
        ),
        (
            "v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@x.com",
            "dmarc.subdomain.weaker",
            "sp=quarantine",
        ),
        (
            "v=DMARC1; p=reject; np=none; rua=mailto:d@x.com",
            "dmarc.subdomain.weaker",
            "np=none at _dmarc.x.com is weaker than the subdomain policy reject",
        ),
        ("v=DMARC1; p=reject", "dmarc.rua.missing", "no rua= at _dmarc.x.com"),
        (
            "v=DMARC1; p=reject; fo=1; rua=mailto:d@x.com",
            "dmarc.reporting.odd",
            "fo=1 at _dmarc.x.com asks for failure reports, but no ruf=",
        ),
        ("v=DMARC1; p=reject; ri=3600; rua=mailto:d@x.com", "dmarc.reporting.odd", "ri=3600"),
    ],
)
def test_each_weakness_has_its_code(text: str, code: str, fragment: str) -> None:
    (weakness,) = weaknesses(parse_record(text), "_dmarc.x.com")
    assert weakness.code == code and fragment in weakness.summary, weakness
    assert weakness.code in CATALOG


def test_what_does_not_weaken_a_policy() -> None:
    """pct and t mean nothing under p=none (p=none is the finding); fo with a
    ruf address and the default ri are as meant; sp as strong as p is fine."""
    quiet = [
        "v=DMARC1; p=none; pct=10; t=y; rua=mailto:d@x.com",
        "v=DMARC1; p=reject; fo=1; ruf=mailto:f@x.com; rua=mailto:d@x.com",
        "v=DMARC1; p=quarantine; sp=reject; ri=86400; rua=mailto:d@x.com",
    ]
    assert [[w.code for w in weaknesses(parse_record(t), "_dmarc.x.com")] for t in quiet] == [
        ["dmarc.policy.none"],
        [],
        [],
    ]


def test_stronger_subdomain_policies_are_fine() -> None:
    record = parse_record("v=DMARC1; p=none; sp=reject; np=reject; rua=mailto:d@x.com")
    assert [w.code for w in weaknesses(record, "_dmarc.x.com")] == ["dmarc.policy.none"]


def test_assumed_p_none_is_weak() -> None:
    found = weaknesses(parse_record("v=DMARC1; rua=mailto:d@example.com"), "_dmarc.example.com")
    assert [w.code for w in found] == ["dmarc.policy.none"]


# -- organisational domains and external destinations ---------------------------------------


@pytest.mark.parametrize(
    ("domain", "org"),
    [
        ("example.com", "example.com"),
        ("mail.eu.example.com", "example.com"),
        ("Example.COM.", "example.com"),
        ("shop.example.co.uk", "example.co.uk"),
        ("co.uk", "co.uk"),  # a public suffix is its own organisational domain
        ("user.github.io", "user.github.io"),  # the PSL's private section counts too
        ("mx.healthy.test", "healthy.test"),  # unknown TLDs: one label under it
        ("mail.acme.xn--55qx5d.cn", "acme.xn--55qx5d.cn"),  # an IDN suffix (公司.cn), A-labels
        ("mail.acme.公司.cn", "acme.公司.cn"),  # and U-labels
        ("a.b.xn--zz.com", "xn--zz.com"),  # not a valid A-label: a label like any other
    ],
)
def test_organizational_domain(domain: str, org: str) -> None:
    assert organizational_domain(domain) == org


def test_external_destinations_need_authorisation_records() -> None:
    record = parse_record(
        "v=DMARC1; p=reject; rua=mailto:d@example.com,mailto:x@reports.vendor.net!10m; "
        "ruf=mailto:f@mail.example.com,mailto:f@Forensics.Other.org"
    )
    assert external_destinations("example.com", record) == [
        ("mailto:x@reports.vendor.net!10m", "example.com._report._dmarc.reports.vendor.net"),
        ("mailto:f@Forensics.Other.org", "example.com._report._dmarc.forensics.other.org"),
    ]


def test_a_subdomain_reporting_to_its_organisation_is_not_external() -> None:
    record = parse_record("v=DMARC1; p=reject; rua=mailto:d@example.com")
    assert external_destinations("shop.example.com", record) == []
    assert external_destinations("example.org", record) == [
        ("mailto:d@example.com", "example.org._report._dmarc.example.com")
    ]


def test_external_destinations_are_listed_once() -> None:
    record = parse_record("v=DMARC1; p=reject; rua=mailto:d@vendor.net; ruf=mailto:d@vendor.net")
    assert external_destinations("Example.com.", record) == [
        ("mailto:d@vendor.net", "example.com._report._dmarc.vendor.net")
    ]


@pytest.mark.parametrize(
    ("txts", "ok"),
    [
        (["v=DMARC1"], True),
        (["v=DMARC1;"], True),
        (["v=DMARC1; rua=mailto:d@vendor.net"], True),
        (["other", "v=DMARC1"], True),
        ([], False),
        (["v=spf1 -all"], False),
        (["v=dmarc1"], False),
        (["v=DMARC10"], False),
    ],
)
def test_authorizes(txts: list[str], ok: bool) -> None:
    assert authorizes(txts) is ok


def test_the_quickly_parsed_suffix_list_is_the_librarys() -> None:
    # Every rule of the bundled list, in U-label and A-label form, finds the
    # same organisational domain as the library's own (slower) parse, which
    # punycodes the IDN rules where ours decodes the name's A-labels.
    from publicsuffixlist import PSLFILE, PublicSuffixList, encode_idn

    reference = PublicSuffixList()
    names = ["example.com", "a.b.example.co.uk", "xn--80ak6aa92e.com", "localhost"]
    with open(PSLFILE, encoding="utf-8") as source:
        for line in source:
            rule = line.split(" ")[0].strip().lower()
            if rule and not rule.startswith("//"):
                bare = rule.lstrip("!").replace("*", "w")
                names += [f"x.y.{bare}", f"x.y.{encode_idn(bare)}"]
    assert len(names) > 20_000
    assert [organizational_domain(n) for n in names] == [
        reference.privatesuffix(n) or n for n in names
    ]
