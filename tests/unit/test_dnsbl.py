"""DNS blocklists: query names and what the answers mean."""

import pytest

from checks.rules.dnsbl import DEFAULT_ZONES, TEST_LISTED, Listing, Verdict, interpret, query_name

ZEN = "zen.spamhaus.org"


def test_default_zones() -> None:
    assert ZEN in DEFAULT_ZONES and "bl.spamcop.net" in DEFAULT_ZONES
    # SORBS shut down in 2024; a dead list's zone can be taken over and list everyone.
    assert not any("sorbs" in z for z in DEFAULT_ZONES)
    assert all(z == z.lower() and not z.endswith(".") for z in DEFAULT_ZONES)


@pytest.mark.parametrize(
    ("address", "zone", "name"),
    [
        ("192.0.2.25", ZEN, "25.2.0.192.zen.spamhaus.org"),
        (TEST_LISTED, "bl.spamcop.net.", "2.0.0.127.bl.spamcop.net"),
        ("10.0.0.1", "Zen.Spamhaus.ORG", "1.0.0.10.zen.spamhaus.org"),
        ("::ffff:192.0.2.25", ZEN, "25.2.0.192.zen.spamhaus.org"),
        (
            "2001:db8::1",
            ZEN,
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.spamhaus.org",
        ),
        (
            "2001:DB8:1234::ab",
            "x.test",
            "b.a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.4.3.2.1.8.b.d.0.1.0.0.2.x.test",
        ),
    ],
)
def test_query_name(address: str, zone: str, name: str) -> None:
    assert query_name(address, zone) == name


def test_query_name_ipv6_has_32_nibbles() -> None:
    labels = query_name("::1", "x.test").split(".")
    assert len(labels) == 34 and labels[0] == "1" and set(labels[1:32]) == {"0"}


@pytest.mark.parametrize("address", ["mx.example.com", "192.0.2", "", "192.0.2.256"])
def test_query_name_refuses_non_addresses(address: str) -> None:
    with pytest.raises(ValueError):
        query_name(address, ZEN)


def test_nxdomain_is_not_listed() -> None:
    assert interpret(ZEN, []) == Verdict(ZEN, Listing.NOT_LISTED, "not listed in zen.spamhaus.org")
    assert not interpret(ZEN, []).listed


@pytest.mark.parametrize(
    ("code", "meaning"),
    [
        ("127.0.0.2", "SBL"),
        ("127.0.0.3", "SBL CSS"),
        ("127.0.0.4", "XBL"),
        ("127.0.0.9", "SBL DROP"),
        ("127.0.0.10", "PBL (ISP-maintained)"),
        ("127.0.0.11", "PBL (Spamhaus-maintained)"),
    ],
)
def test_spamhaus_listing_codes_are_explained(code: str, meaning: str) -> None:
    verdict = interpret(ZEN, [code])
    assert verdict.listing is Listing.LISTED and verdict.listed
    assert verdict.reason.startswith(f"listed in zen.spamhaus.org: {code} ({meaning}")
    assert verdict.answers == (code,)


def test_several_codes_are_all_named() -> None:
    verdict = interpret(ZEN, ["127.0.0.4", "127.0.0.10"])
    assert (
        verdict.listed
        and "127.0.0.4 (XBL" in verdict.reason
        and "127.0.0.10 (PBL" in verdict.reason
    )


@pytest.mark.parametrize("code", ["127.0.0.5", "127.0.0.8", "127.0.0.20", "127.1.2.3"])
def test_other_loopback_codes_are_listed(code: str) -> None:
    verdict = interpret(ZEN, [code])
    assert verdict.listed and verdict.reason == f"listed in zen.spamhaus.org: {code}"


def test_other_lists_get_no_spamhaus_meanings() -> None:
    assert (
        interpret("bl.spamcop.net", ["127.0.0.2"]).reason == "listed in bl.spamcop.net: 127.0.0.2"
    )


@pytest.mark.parametrize(
    ("zone", "code", "fragment"),
    [
        (ZEN, "127.255.255.252", "misspelt"),
        (ZEN, "127.255.255.254", "public or open resolver"),
        (ZEN, "127.255.255.255", "too many queries"),
        ("key.zen.dq.spamhaus.net", "127.255.255.254", "public or open resolver"),
        ("sbl.spamhaus.org.", "127.255.255.255", "too many queries"),
        (ZEN, "127.255.255.253", "127.255.255.0/24 for query errors"),
        (ZEN, "127.0.1.255", "domain list"),
        ("bl.spamcop.net", "127.255.255.254", "127.255.255.0/24 for query errors"),
        ("bl.spamcop.net", "127.0.0.1", "not a listing code (RFC 5782)"),
        (ZEN, "127.0.0.0", "not a listing code"),
    ],
)
def test_error_codes_are_inconclusive_never_listed(zone: str, code: str, fragment: str) -> None:
    verdict = interpret(zone, [code])
    assert verdict.listing is Listing.INCONCLUSIVE and not verdict.listed
    assert "which is not a listing" in verdict.reason and fragment in verdict.reason


def test_an_error_code_beside_a_listing_code_is_still_inconclusive() -> None:
    for answers in (["127.0.0.2", "127.255.255.254"], ["127.255.255.254", "127.0.0.2"]):
        assert interpret(ZEN, answers).listing is Listing.INCONCLUSIVE


@pytest.mark.parametrize("answer", ["198.51.100.7", "0.0.0.0", "10.0.0.1", "::1", "128.0.0.2"])
def test_answers_outside_loopback_are_inconclusive(answer: str) -> None:
    verdict = interpret(ZEN, ["127.0.0.2", answer])
    assert verdict.listing is Listing.INCONCLUSIVE
    assert f"answered {answer}, outside 127.0.0.0/8" in verdict.reason
    assert "rewrites NXDOMAIN or a hijacked zone" in verdict.reason


def test_garbage_answers_are_inconclusive_and_made_safe() -> None:
    verdict = interpret(ZEN, ["\x1b[2Jnot-an-ip"])
    assert verdict.listing is Listing.INCONCLUSIVE and "\x1b" not in verdict.reason


def test_zone_is_normalised() -> None:
    assert interpret("ZEN.Spamhaus.org.", ["127.0.0.2"]).zone == ZEN
