"""The RFC 7208 test suite (openspf.org, release 2014.04) against check_host().

Each YAML document holds test cases and the zone they run in; `ZoneLookup`
serves that zone as the SPFLookup seam. It follows the suite's own driver
conventions (pyspf's testspf.py, which the suite's header describes):

- "SPF" entries (type 99) are copied to TXT when the name has no TXT entry at
  all, and never answered as type SPF: RFC 7208 uses TXT only, and most of the
  suite writes its records as "SPF" on the understanding that drivers do this
  copy. `TXT: NONE` marks a name whose TXT set is empty, so no copy is made.
- TIMEOUT in a name's list: a query times out unless records of the asked
  type come before it in the list.
- A name absent from the zone is NXDOMAIN; present without the type, NODATA.
- Names are case-insensitive; a CNAME is followed when the name has no
  records of the asked type; a CNAME loop is a resolver failure.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import dns.reversename
import pytest
import yaml

from checks.core.errors import NXDomain, ResolverFailure, ResolverTimeout
from checks.rules.spf import Result, check_mail_from

SUITE = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "spf" / "rfc7208-tests.yml"
REQUIRED_PASS_RATE = 0.97
# What the suite writes where an implementation's default explanation goes.
DEFAULT_EXPLANATION = "DEFAULT"


class ZoneLookup:
    def __init__(self, zonedata: dict[str, list[Any]]) -> None:
        self.zone = {_key(name): _entries(records) for name, records in zonedata.items()}
        self.queries: list[tuple[str, str]] = []

    def _query(self, name: str, rdtype: str, hops: int = 0) -> list[Any]:
        self.queries.append((name, rdtype))
        entries = self.zone.get(_key(name))
        if entries is None:
            raise NXDomain(name, rdtype, f"NXDOMAIN: {name} does not exist")
        found = []
        for kind, value in entries:
            if kind == "TIMEOUT":
                if not found:
                    raise ResolverTimeout(name, rdtype, "no answer (TIMEOUT in the test zone)")
                break
            if kind == rdtype:
                found.append(value)
        cnames = [value for kind, value in entries if kind == "CNAME"]
        if not found and cnames:
            if hops > 8:
                raise ResolverFailure(name, rdtype, "CNAME chain too long (loop?)")
            return self._query(str(cnames[0]), rdtype, hops + 1)
        return found

    async def txt(self, name: str) -> list[str]:
        return [v if isinstance(v, str) else "".join(v) for v in self._query(name, "TXT")]

    async def a(self, name: str) -> list[str]:
        return [str(v) for v in self._query(name, "A")]

    async def aaaa(self, name: str) -> list[str]:
        return [str(v) for v in self._query(name, "AAAA")]

    async def mx(self, name: str) -> list[tuple[int, str]]:
        return [(int(p), _key(str(host))) for p, host in self._query(name, "MX")]

    async def ptr(self, address: str) -> list[str]:
        reverse = dns.reversename.from_address(address).to_text()
        return [_key(str(v)) for v in self._query(reverse, "PTR")]


def _key(name: str) -> str:
    return name.rstrip(".").lower()


def _entries(records: list[Any]) -> list[tuple[str, Any]]:
    """The zone's records in order, with the suite's SPF-to-TXT convention applied."""
    has_txt = any(isinstance(r, dict) and "TXT" in r for r in records)
    entries: list[tuple[str, Any]] = []
    copied: list[tuple[str, Any]] = []
    for record in records:
        if record == "TIMEOUT":
            entries.append(("TIMEOUT", None))
            continue
        for kind, value in record.items():
            if kind == "SPF":
                if not has_txt:
                    copied.append(("TXT", value))
            elif value != "NONE":
                entries.append((kind, value))
    return entries + copied


@functools.cache
def load_cases() -> tuple[tuple[str, dict[str, Any], dict[str, Any]], ...]:
    """(name, case, zonedata) for every case in the suite; () without the file."""
    if not SUITE.exists():
        return ()
    with SUITE.open(encoding="utf-8") as f:
        documents = list(yaml.safe_load_all(f))
    return tuple(
        (name, case, doc["zonedata"]) for doc in documents for name, case in doc["tests"].items()
    )


async def run_case(case: dict[str, Any], zonedata: dict[str, Any]) -> Result:
    return await check_mail_from(
        str(case["host"]),
        str(case["mailfrom"]),
        str(case["helo"]),
        ZoneLookup(zonedata),
        default_explanation=DEFAULT_EXPLANATION,
    )


def verdict_problem(case: dict[str, Any], result: Result) -> str | None:
    """Why `result` does not satisfy the case, or None if it does."""
    expected = case["result"]
    acceptable = expected if isinstance(expected, list) else [expected]
    if result.result not in acceptable:
        return f"result {result.result}"
    if "explanation" in case and result.explanation != case["explanation"]:
        return f"explanation {result.explanation!r}"
    return None


def _require_suite() -> None:
    if not load_cases():
        pytest.skip(f"RFC 7208 test suite not found at {SUITE}")


async def test_rfc7208_suite_pass_rate() -> None:
    _require_suite()
    failures = []
    cases = load_cases()
    for name, case, zonedata in cases:
        result = await run_case(case, zonedata)
        problem = verdict_problem(case, result)
        if problem is not None:
            wanted = case["result"]
            if "explanation" in case:
                wanted = f"{wanted} / {case['explanation']!r}"
            failures.append((name, str(wanted), problem, result.problem or ""))
    rate = 1 - len(failures) / len(cases)
    print(f"\nRFC 7208 suite: {len(cases) - len(failures)}/{len(cases)} passed ({rate:.1%})")
    if failures:
        print(f"{'case':28} {'expected':30} {'got':40} problem")
        for row in failures:
            print(f"{row[0]:28} {row[1]:30} {row[2]:40} {row[3]}")
    assert rate >= REQUIRED_PASS_RATE, f"{len(failures)} of {len(cases)} suite cases fail"


# A few cases that catch the classic mistakes, run on their own so a
# regression names itself.
FAMOUS = (
    "include-loop",  # loops end at the lookup limit
    "include-none",  # include of a domain without SPF: permerror
    "mx-limit",  # more than 10 MX names: permerror
    "void-over-limit",
    "mech-at-limit",
    "detect-errors-anywhere",  # a bad term after a match is still permerror
    "ip4-mapped-ip6",
    "a-dual-cidr-ip6-match",
    "redirect-cancels-exp",
    "include-ignores-exp",
    "upper-macro",
    "domain-name-truncation",
    "p-macro-multiple",
    "ptr-cname-loop",
    "exp-void",
    "cname-aliasing",
)


@pytest.mark.parametrize("name", FAMOUS)
async def test_famous_case(name: str) -> None:
    _require_suite()
    found = {n: (case, zone) for n, case, zone in load_cases()}
    case, zonedata = found[name]
    result = await run_case(case, zonedata)
    assert verdict_problem(case, result) is None, (result, case)


def test_zone_copies_spf_to_txt_only_without_txt() -> None:
    assert _entries([{"SPF": "v=spf1 -all"}]) == [("TXT", "v=spf1 -all")]
    assert _entries([{"SPF": "v=spf1 +all"}, {"TXT": "v=spf1 -all"}]) == [("TXT", "v=spf1 -all")]
    assert _entries([{"SPF": "v=spf1 -all"}, {"TXT": "NONE"}, "TIMEOUT"]) == [("TIMEOUT", None)]
