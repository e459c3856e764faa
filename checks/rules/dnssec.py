"""DNSSEC validation: does an answer's chain of trust hold, and if not, where not?

An on-call engineer's debugger in the spirit of DNSViz, not a resolver: for one
name and type it finds the zone holding the name, walks from the nearest trust
anchor down to that zone (DNSKEY rrset proven by the parent's DS, or by the
anchor; the DS itself proven by the parent's keys), checks the answer's RRSIGs
against the zone's keys, and says which link broke in one sentence, with the
links that held as evidence lines.

Every lookup goes through the `SignedLookup` it is given: the policy stage
hands it the network door's `query_dnssec` (DO and CD set, so a validating
resolver hands over the bogus data for us to judge), so it lands in the
probe's transcript and is memoised per check; each zone's DS/DNSKEY links
are also memoised per `Validator`, so the MX of a domain and the TLSA of its
three MX hosts cost each zone's links once.

Not checked, on purpose (a debugger, not a guard): NSEC/NSEC3 denial proofs.
An NXDOMAIN or NODATA answer from a secure zone, and a missing DS at a secure
parent, are accepted when the denial carries NSEC or NSEC3 records whose
RRSIGs verify against the zone's keys; that those records actually cover the
name (and that no wildcard could have matched) is not proven. Wildcard
expansions of positive answers are likewise accepted on their RRSIG alone.

Bounded, like a resolver since KeyTrap (CVE-2023-50387, CVE-2023-50868): a
hostile zone can pair many RRSIGs with many DNSKEYs sharing one key tag, and
every combination is a public-key operation of milliseconds. So a validator
tries a few keys per tag, a few signature checks per RRset and a budget per
check, and skips denials with too many NSEC/NSEC3 records or NSEC3 iterations
(EngineConfig.cpu, checks.core.config.CPULimits). Past a bound the verdict is
INDETERMINATE, naming the bound. The checks themselves run in worker threads
(the RSA and ECDSA arithmetic releases the GIL), so the event loop, and with
it the check deadline and the worker's heartbeat, never waits on them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, TypeVar

import dns.dnssec
import dns.dnssecalgs
import dns.exception
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
from dns.rdtypes.ANY.DNSKEY import DNSKEY
from dns.rdtypes.ANY.DS import DS
from dns.rdtypes.ANY.RRSIG import RRSIG

from checks.core.answers import SignedAnswer
from checks.core.config import CPULimits
from checks.core.errors import DNSError, InputError

# The IANA root zone trust anchors (https://data.iana.org/root-anchors/root-anchors.xml):
# KSK-2017 (tag 20326, in use since 2018) and KSK-2024 (tag 38696, published in
# the root zone since 2025, signing from 2026). Both are RSASHA256 keys; the
# digests are SHA-256.
ROOT_ANCHORS: tuple[str, ...] = (
    ". IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D",
    ". IN DS 38696 8 2 683D2D0ACB8C9B712A1948B27F741219298D0A450D612C483AF444A4C0FB2B16",
)

# Algorithms a validator must not trust any more (RFC 8624): a zone signed
# only with them counts as unsigned, as do zones using algorithms dnspython
# cannot verify (RFC 4035 §5.2).
_DEPRECATED_ALGORITHMS = frozenset({1, 3, 6})  # RSAMD5, DSA, DSA-NSEC3-SHA1
_DIGESTS = frozenset({1, 2, 4})  # SHA-1, SHA-256, SHA-384

# Bounds against hostile answers.
_MAX_CNAMES = 16
_SHOWN = 6  # keys, DS records or problems named in one reason; the rest are counted

_T = TypeVar("_T")


class Security(StrEnum):
    SECURE = "secure"  # an unbroken chain from a trust anchor; every signature valid now
    INSECURE = "insecure"  # provably unsigned: a zone on the path has no DS at its parent
    BOGUS = "bogus"  # signed, but a link is broken: a validating resolver says SERVFAIL
    INDETERMINATE = "indeterminate"  # no anchor covers the name, or a lookup failed


# Weakest last: a CNAME chain is as good as its weakest link.
_RANK = {
    Security.SECURE: 0,
    Security.INSECURE: 1,
    Security.INDETERMINATE: 2,
    Security.BOGUS: 3,
}


@dataclass(frozen=True)
class Validated:
    """The verdict on one name/type, with the evidence an engineer checks it by."""

    name: str  # as asked, without the final dot
    rdtype: str
    status: Security
    records: tuple[Any, ...]  # rdata of the final answer (after CNAMEs); () when none
    zone: str | None  # the zone holding `name`, without the final dot, when found
    reason: str  # why bogus / insecure / indeterminate, one sentence; "" when secure
    chain: tuple[str, ...]  # evidence lines, top down

    @property
    def secure(self) -> bool:
        return self.status is Security.SECURE


@dataclass(frozen=True)
class TrustAnchor:
    """The DS and/or DNSKEY records trusted for one zone, without asking anyone."""

    zone: dns.name.Name
    ds: tuple[DS, ...] = ()
    keys: tuple[DNSKEY, ...] = ()


def parse_anchors(lines: Iterable[str]) -> dict[dns.name.Name, TrustAnchor]:
    """Trust anchors from DS or DNSKEY records in zone-file presentation format,
    one a line (`. IN DS 20326 8 2 E06D...`, `test. 3600 IN DNSKEY 257 3 13 ...`);
    blank lines and `;` comments are skipped. Raises InputError naming the bad line."""
    found: dict[dns.name.Name, TrustAnchor] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        zone, rdata = _parse_anchor(line, number, raw)
        anchor = found.get(zone, TrustAnchor(zone))
        if isinstance(rdata, DS):
            anchor = TrustAnchor(zone, (*anchor.ds, rdata), anchor.keys)
        else:
            anchor = TrustAnchor(zone, anchor.ds, (*anchor.keys, rdata))
        found[zone] = anchor
    return found


def _parse_anchor(line: str, number: int, raw: str) -> tuple[dns.name.Name, DS | DNSKEY]:
    def bad(why: str) -> InputError:
        return InputError(f"trust anchor line {number} ({raw.strip()!r}): {why}")

    tokens = line.split()
    if len(tokens) < 3:
        raise bad("expected 'NAME [TTL] [IN] DS|DNSKEY DATA'")
    try:
        zone = dns.name.from_text(tokens[0])
    except dns.exception.DNSException as exc:
        raise bad(f"{tokens[0]!r} is not a DNS name ({exc})") from exc
    rest = tokens[1:]
    if rest and rest[0].isdigit():
        rest = rest[1:]
    if rest and rest[0].upper() == "IN":
        rest = rest[1:]
    if not rest or rest[0].upper() not in ("DS", "DNSKEY"):
        raise bad("only DS and DNSKEY records can be trust anchors")
    rdtype = dns.rdatatype.from_text(rest[0])
    if len(rest) < 2:
        raise bad(f"the {rest[0].upper()} record has no data")
    try:
        rdata = dns.rdata.from_text(dns.rdataclass.IN, rdtype, " ".join(rest[1:]))
    except (dns.exception.DNSException, ValueError) as exc:
        raise bad(f"bad {rest[0].upper()} data ({exc})") from exc
    if not isinstance(rdata, DS | DNSKEY):  # pragma: no cover - from_text honours rdtype
        raise bad("not a DS or DNSKEY record")
    return zone, rdata


class _Broken(Exception):
    """A link that did not hold: stops the walk with a verdict (never leaves this module)."""

    def __init__(self, status: Security, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class _ZoneTrust:
    """How far the chain of trust reaches into one zone."""

    zone: dns.name.Name
    status: Security
    reason: str
    chain: tuple[str, ...]
    keys: dns.rdataset.Rdataset | None = None  # the proven DNSKEY rrset, when SECURE


@dataclass(frozen=True)
class _ZoneFound:
    zone: dns.name.Name | None
    reason: str = ""  # why not found


@dataclass(frozen=True)
class _Step:
    """One rrset of an answer to judge: a CNAME/DNAME on the way, or the final one."""

    owner: dns.name.Name
    rdtype: dns.rdatatype.RdataType
    rrset: dns.rrset.RRset | None  # None: denied (NXDOMAIN or NODATA)
    sigs: dns.rrset.RRset | None
    answer: SignedAnswer  # the one it came in (a denial's proof is in its authority)


class _Work:
    """Signature checks made for one check, counted across worker threads."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.done = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Count one more check, or False when the budget is spent."""
        with self._lock:
            if self.done >= self.limit:
                return False
            self.done += 1
            return True


class SignedLookup(Protocol):
    """The one question a validator asks: `name`/`rdtype` with DO and CD set,
    the answer kept whole. Raises DNSError when no usable answer came."""

    async def query_dnssec(self, name: str, rdtype: str) -> SignedAnswer: ...


class Validator:
    """Validates answers for one check, memoising each zone's links of the chain."""

    def __init__(
        self,
        lookup: SignedLookup,
        limits: CPULimits,
        anchors: Sequence[str] | None = None,
        now: Callable[[], float] | None = None,
    ) -> None:
        """`anchors` None: the IANA root anchors. Raises InputError on a bad anchor."""
        self.lookup = lookup
        self.anchors = parse_anchors(ROOT_ANCHORS if anchors is None else anchors)
        self.limits = limits
        self._now = now or time.time
        self._work = _Work(self.limits.dnssec_validations)
        # One worker thread at a time per check: threads running Python code
        # take turns at the GIL with the event loop, and several would make
        # the loop wait for several turns.
        self._one_thread = asyncio.Lock()
        self._zones: dict[dns.name.Name, asyncio.Task[_ZoneFound]] = {}
        self._trust: dict[dns.name.Name, asyncio.Task[_ZoneTrust]] = {}

    # -- the public face ------------------------------------------------------------

    @property
    def verifications(self) -> int:
        """Signature checks made so far (public-key operations), all answers together."""
        return self._work.done

    async def validate(self, name: str, rdtype: str) -> Validated:
        """The DNSSEC status of `name`/`rdtype`, following CNAMEs; never raises
        on what DNS servers send."""
        shown_name = name.rstrip(".").lower() or "."
        rdtype = rdtype.upper()
        try:
            qname = dns.name.from_text(shown_name)
            qtype = dns.rdatatype.from_text(rdtype)
        except dns.exception.DNSException as exc:
            return Validated(
                shown_name,
                rdtype,
                Security.INDETERMINATE,
                (),
                None,
                f"{name!r}/{rdtype} cannot be looked up: {exc}",
                (),
            )
        # The zone of the name asked is needed whatever the answer; ask at once.
        answer_or_error, found = await asyncio.gather(
            self._ask(qname, rdtype),
            self._zone_of(_zone_name_for(qname, qtype)),
            return_exceptions=True,
        )
        zone = found.zone if isinstance(found, _ZoneFound) else None
        zone_text = _plain(zone) if zone is not None else None

        def verdict(
            status: Security, reason: str, records: tuple[Any, ...] = (), chain: Sequence[str] = ()
        ) -> Validated:
            return Validated(shown_name, rdtype, status, records, zone_text, reason, tuple(chain))

        if isinstance(answer_or_error, _Broken):
            return verdict(answer_or_error.status, answer_or_error.reason)
        if isinstance(answer_or_error, BaseException):
            raise answer_or_error
        try:
            steps = await self._follow(answer_or_error, qname, qtype)
        except _Broken as broken:
            return verdict(broken.status, broken.reason)
        final = steps[-1]
        records = tuple(final.rrset) if final.rrset is not None else ()

        judged = await asyncio.gather(*(self._judge(step) for step in steps))
        status = max((s for s, _, _ in judged), key=_RANK.__getitem__)
        reason = next((r for s, r, _ in judged if s is status), "")
        chain = list(dict.fromkeys(line for _, _, lines in judged for line in lines))
        return verdict(status, reason, records, chain)

    async def zone_of(self, name: str) -> str | None:
        """The zone holding `name` (without the final dot), or None when not found."""
        try:
            qname = dns.name.from_text(name)
        except dns.exception.DNSException:
            return None
        found = await self._zone_of(qname)
        return _plain(found.zone) if found.zone is not None else None

    # -- one rrset of the answer ----------------------------------------------------

    async def _follow(
        self, answer: SignedAnswer, qname: dns.name.Name, qtype: dns.rdatatype.RdataType
    ) -> list[_Step]:
        """The rrsets to judge. A resolver follows CNAMEs for us; an authoritative
        server (the lab's NSD) stops at a target in a zone it does not speak
        for, and then we ask for the target ourselves."""
        steps: list[_Step] = []
        seen: set[dns.name.Name] = set()
        name = qname
        while True:
            *passed, final = _steps(answer, name, qtype, seen)
            steps += passed
            if final.rrset is not None or final.owner == name or _speaks_for(answer, final.owner):
                return [*steps, final]
            name = final.owner
            answer = await self._ask(name, dns.rdatatype.to_text(qtype))

    async def _judge(self, step: _Step) -> tuple[Security, str, tuple[str, ...]]:
        what = f"{step.owner} {dns.rdatatype.to_text(step.rdtype)}"
        found = await self._zone_of(_zone_name_for(step.owner, step.rdtype))
        if found.zone is None:
            return Security.INDETERMINATE, found.reason, ()
        trust = await self._trust_in(found.zone)
        if trust.status is not Security.SECURE or trust.keys is None:
            return trust.status, trust.reason, trust.chain
        try:
            if step.rrset is not None:
                line = await self._verify(step.rrset, step.sigs, trust.zone, trust.keys, what)
            else:
                nx = step.answer.rcode == dns.rcode.NXDOMAIN
                denied = f"{what}: {'NXDOMAIN' if nx else 'no such records (NODATA)'}"
                line = await self._verify_denial(step.answer, trust, denied)
        except _Broken as broken:
            return broken.status, broken.reason, trust.chain
        return Security.SECURE, "", (*trust.chain, line)

    # -- finding the zone of a name -------------------------------------------------

    def _zone_of(self, name: dns.name.Name) -> Awaitable[_ZoneFound]:
        return _memo(self._zones, name, lambda: self._find_zone(name))

    async def _find_zone(self, name: dns.name.Name) -> _ZoneFound:
        """An SOA lookup: the name's own SOA when it is an apex; otherwise the
        NODATA/NXDOMAIN answer's authority section names the enclosing zone.
        No SOA either way (a CNAME, a stripped answer): try the parent name."""
        try:
            answer = await self._ask(name, "SOA")
        except _Broken as broken:
            return _ZoneFound(None, broken.reason)
        if answer.find(name, dns.rdatatype.CNAME) is None:
            if answer.find(name, dns.rdatatype.SOA) is not None:
                return _ZoneFound(name)
            for rrset in answer.authority:
                if rrset.rdtype == dns.rdatatype.SOA and name.is_subdomain(rrset.name):
                    return _ZoneFound(rrset.name)
        if name == dns.name.root:
            return _ZoneFound(None, "no SOA record found for the root zone")
        return await self._zone_of(name.parent())

    # -- the chain of trust into one zone -------------------------------------------

    def _trust_in(self, zone: dns.name.Name) -> Awaitable[_ZoneTrust]:
        return _memo(self._trust, zone, lambda: self._build_trust(zone))

    async def _build_trust(self, zone: dns.name.Name) -> _ZoneTrust:
        anchor = self._anchor_for(zone)
        if anchor is None:
            covered = ", ".join(str(z) for z in self.anchors) or "none"
            return _ZoneTrust(
                zone,
                Security.INDETERMINATE,
                f"no trust anchor covers {zone} (anchors: {covered})",
                (),
            )
        try:
            if anchor.zone == zone:
                return await self._trust_anchored(zone, anchor)
            return await self._trust_delegated(zone, anchor)
        except _Broken as broken:
            return _ZoneTrust(zone, broken.status, broken.reason, ())

    def _anchor_for(self, zone: dns.name.Name) -> TrustAnchor | None:
        """The nearest anchor at or above `zone`."""
        best: TrustAnchor | None = None
        for anchor in self.anchors.values():
            if zone.is_subdomain(anchor.zone) and (
                best is None or anchor.zone.is_subdomain(best.zone)
            ):
                best = anchor
        return best

    async def _trust_anchored(self, zone: dns.name.Name, anchor: TrustAnchor) -> _ZoneTrust:
        answer = await self._ask(zone, "DNSKEY")
        dnskeys, sigs = _rrset_and_sigs(answer, zone, dns.rdatatype.DNSKEY)
        if dnskeys is None:
            raise _Broken(
                Security.BOGUS,
                f"{zone} publishes no DNSKEY records, but a trust anchor names its keys",
            )
        chain: list[str] = []
        proven: list[DNSKEY] = [k for k in _dnskeys(dnskeys) if k in anchor.keys]
        chain += [
            f"{zone} DNSKEY tag {k.key_id()} alg {k.algorithm} matches the trust anchor"
            for k in proven
        ]
        usable = [ds for ds in anchor.ds if _ds_usable(ds)]
        if anchor.ds and not usable and not proven:
            raise _Broken(
                Security.INSECURE,
                f"{zone} counts as unsigned: every trust anchor for it uses an algorithm "
                f"or digest type this validator cannot check ({_ds_list(anchor.ds)})",
            )
        per_tag = self.limits.dnssec_keys_per_tag
        for ds, key in await asyncio.to_thread(_ds_matches, zone, usable, dnskeys, per_tag):
            proven.append(key)
            chain.append(
                f"{zone} DNSKEY tag {key.key_id()} alg {key.algorithm} matches the trust anchor "
                f"(DS digest {ds.digest_type})"
            )
        if not proven:
            raise _Broken(
                Security.BOGUS,
                f"no DNSKEY of {zone} matches the trust anchor ({_anchor_list(anchor)}); "
                f"{zone} publishes {_key_list(dnskeys)}",
            )
        chain.append(
            await self._verify_keys(zone, dnskeys, sigs, proven, "the trust anchor points to")
        )
        return _ZoneTrust(zone, Security.SECURE, "", tuple(chain), dnskeys)

    async def _trust_delegated(self, zone: dns.name.Name, anchor: TrustAnchor) -> _ZoneTrust:
        parent_trust, ds_answer, key_answer = await asyncio.gather(
            self._parent_trust(zone, anchor),
            self._ask(zone, "DS"),
            self._ask(zone, "DNSKEY"),
            return_exceptions=True,
        )
        if isinstance(parent_trust, BaseException):
            raise parent_trust
        if parent_trust.status is not Security.SECURE or parent_trust.keys is None:
            return _ZoneTrust(zone, parent_trust.status, parent_trust.reason, parent_trust.chain)
        parent = parent_trust.zone
        chain = list(parent_trust.chain)

        def broken(status: Security, reason: str) -> _ZoneTrust:
            return _ZoneTrust(zone, status, reason, tuple(chain))

        if isinstance(ds_answer, _Broken):
            return broken(ds_answer.status, ds_answer.reason)
        if isinstance(ds_answer, BaseException):
            raise ds_answer
        dsset, ds_sigs = _rrset_and_sigs(ds_answer, zone, dns.rdatatype.DS)
        try:
            if dsset is None:
                line = await self._verify_denial(
                    ds_answer, parent_trust, f"{zone} DS: none at {parent}, an insecure delegation"
                )
                chain.append(line)
                reason = f"{zone} is not signed: {parent} has no DS record for it"
                if not isinstance(key_answer, BaseException):
                    keys, _ = _rrset_and_sigs(key_answer, zone, dns.rdatatype.DNSKEY)
                    if keys is not None:
                        reason = (
                            f"{zone} publishes DNSKEY records ({_key_list(keys)}) but {parent} "
                            f"has no DS record for it: an island of security, signed but never "
                            f"delegated securely, so validators treat it as unsigned"
                        )
                return broken(Security.INSECURE, reason)
            chain.append(
                await self._verify(dsset, ds_sigs, parent, parent_trust.keys, f"{zone} DS")
            )
        except _Broken as exc:
            return broken(exc.status, exc.reason)

        all_ds = [ds for ds in dsset if isinstance(ds, DS)]
        usable = [ds for ds in all_ds if _ds_usable(ds)]
        if not usable:
            return broken(
                Security.INSECURE,
                f"{zone} counts as unsigned: every DS for it at {parent} uses an algorithm "
                f"or digest type this validator cannot check ({_ds_list(all_ds)})",
            )
        if isinstance(key_answer, _Broken):
            return broken(key_answer.status, key_answer.reason)
        if isinstance(key_answer, BaseException):
            raise key_answer
        dnskeys, key_sigs = _rrset_and_sigs(key_answer, zone, dns.rdatatype.DNSKEY)
        if dnskeys is None:
            return broken(
                Security.BOGUS,
                f"{parent} has a DS for {zone} ({_ds_list(usable)}) but {zone} publishes "
                f"no DNSKEY records",
            )
        per_tag = self.limits.dnssec_keys_per_tag
        matches = await asyncio.to_thread(_ds_matches, zone, usable, dnskeys, per_tag)
        if not matches:
            return broken(
                Security.BOGUS,
                f"no DNSKEY of {zone} matches its DS at {parent} ({_ds_list(usable)}); "
                f"{zone} publishes {_key_list(dnskeys)}",
            )
        chain += [
            f"{zone} DS tag {ds.key_tag} alg {ds.algorithm} digest {ds.digest_type} "
            f"-> DNSKEY tag {key.key_id()} (signed by {parent})"
            for ds, key in matches
        ]
        try:
            proven = [k for _, k in matches]
            chain.append(
                await self._verify_keys(zone, dnskeys, key_sigs, proven, "the DS points to")
            )
        except _Broken as exc:
            return broken(exc.status, exc.reason)
        return _ZoneTrust(zone, Security.SECURE, "", tuple(chain), dnskeys)

    async def _parent_trust(self, zone: dns.name.Name, anchor: TrustAnchor) -> _ZoneTrust:
        found = await self._zone_of(zone.parent())
        if found.zone is None:
            return _ZoneTrust(zone, Security.INDETERMINATE, found.reason, ())
        if not found.zone.is_subdomain(anchor.zone):
            return _ZoneTrust(
                zone,
                Security.INDETERMINATE,
                f"the trust anchor for {anchor.zone} is not at a zone apex: "
                f"{zone} is delegated from {found.zone}, above it",
                (),
            )
        return await self._trust_in(found.zone)

    # -- signatures -----------------------------------------------------------------

    async def _verify_keys(
        self,
        zone: dns.name.Name,
        dnskeys: dns.rrset.RRset,
        sigs: dns.rrset.RRset | None,
        proven: Sequence[DNSKEY],
        role: str,
    ) -> str:
        """The DNSKEY rrset must be signed by a key the DS (or the anchor) points to."""
        trusted = dns.rdataset.Rdataset(dns.rdataclass.IN, dns.rdatatype.DNSKEY)
        for key in proven:
            trusted.add(key)
        return await self._verify(dnskeys, sigs, zone, trusted, f"{zone} DNSKEY", role)

    async def _verify(
        self,
        rrset: dns.rrset.RRset,
        sigs: dns.rrset.RRset | None,
        signer: dns.name.Name,
        keys: dns.rdataset.Rdataset,
        what: str,
        role: str = "in the DNSKEY set",
    ) -> str:
        """An evidence line for the first RRSIG over `rrset` by `signer`'s `keys`
        that verifies now; _Broken(BOGUS) naming the RRSIGs' problems otherwise,
        or _Broken(INDETERMINATE) when a bound stopped the checks first."""
        signatures = [s for s in sigs or () if isinstance(s, RRSIG)]
        if not signatures:
            raise _Broken(
                Security.BOGUS,
                f"{what}: the answer carries no RRSIG although {signer} is signed: "
                f"a server or resolver on the path strips DNSSEC records",
            )
        # Off the loop: even bounded, a hostile rrset costs tens of milliseconds.
        async with self._one_thread:
            return await asyncio.to_thread(
                self._check_signatures, rrset, signatures, signer, keys, what, role
            )

    def _check_signatures(
        self,
        rrset: dns.rrset.RRset,
        signatures: Sequence[RRSIG],
        signer: dns.name.Name,
        keys: dns.rdataset.Rdataset,
        what: str,
        role: str,
    ) -> str:
        """_verify's work, in a worker thread. Tries each RRSIG in turn with at
        most `dnssec_keys_per_tag` keys of its tag, stopping after
        `dnssec_signatures_per_rrset` checks or when the check's budget is spent."""
        limits = self.limits
        now = self._now()
        index = _key_index(keys)
        problems: list[str] = []
        crowded: dict[tuple[int, int], int] = {}
        made = 0
        stop: str | None = None  # "rrset" or "budget": the bound that ended the checks
        untried = 0
        for position, sig in enumerate(signatures):
            tag = sig.key_tag
            candidates = index.get((tag, sig.algorithm), [])
            if sig.signer != signer:
                problems.append(f"the RRSIG by tag {tag} names signer {sig.signer}, not {signer}")
            elif not _algorithm_usable(sig.algorithm):
                problems.append(
                    f"the RRSIG by tag {tag} uses algorithm {sig.algorithm}, "
                    f"which this validator cannot check"
                )
            elif not candidates:
                problems.append(
                    f"the RRSIG by tag {tag} alg {sig.algorithm} is by no key {role} "
                    f"({_key_list(keys)})"
                )
            elif sig.expiration < now:
                problems.append(
                    f"the RRSIG by tag {tag} expired on {_when(sig.expiration)} "
                    f"(valid from {_when(sig.inception)})"
                )
            elif sig.inception > now:
                problems.append(
                    f"the RRSIG by tag {tag} is not valid before {_when(sig.inception)} "
                    f"(until {_when(sig.expiration)})"
                )
            else:
                tried = candidates[: limits.dnssec_keys_per_tag]
                if len(candidates) > len(tried):
                    crowded[(tag, sig.algorithm)] = len(candidates)
                failure = ""
                for key in tried:
                    if made >= limits.dnssec_signatures_per_rrset:
                        stop = "rrset"
                    elif not self._work.take():
                        stop = "budget"
                    if stop is not None:
                        break
                    made += 1
                    try:
                        _signature_holds(rrset, sig, signer, key, now)
                    except (dns.exception.DNSException, ValueError) as exc:
                        failure = str(exc)
                    else:
                        return f"{what} RRSIG by tag {tag} valid until {_day(sig.expiration)}"
                if stop is not None:
                    untried = len(signatures) - position
                    break
                problems.append(f"the RRSIG by tag {tag} does not verify ({failure})")
        bounds = [
            f"{count} DNSKEYs share tag {tag} alg {alg} and a validator tries "
            f"{limits.dnssec_keys_per_tag} of them"
            for (tag, alg), count in crowded.items()
        ]
        if stop == "rrset":
            bounds.append(
                f"{len(signatures)} RRSIGs cover it and a validator makes "
                f"{limits.dnssec_signatures_per_rrset} signature checks per RRset "
                f"({untried} not tried)"
            )
        elif stop == "budget":
            bounds.append(
                f"mailcheck's budget of {limits.dnssec_validations} signature checks per "
                f"check is spent ({untried} of its {len(signatures)} RRSIGs not tried)"
            )
        if bounds:
            tried_text = f"; the checks made failed: {_some(_tally(problems))}" if problems else ""
            raise _Broken(
                Security.INDETERMINATE,
                f"{what}: too costly to validate, not judged (KeyTrap bounds, "
                f"CVE-2023-50387; validating resolvers answer SERVFAIL here): "
                f"{'; '.join(bounds)}{tried_text}",
            )
        raise _Broken(Security.BOGUS, f"{what}: {_some(_tally(problems))}")

    async def _verify_denial(self, answer: SignedAnswer, trust: _ZoneTrust, what: str) -> str:
        """A denial from a secure zone must carry signed NSEC or NSEC3 records;
        their signatures are verified, whether they prove the denial is not."""
        assert trust.keys is not None
        proofs = [
            rrset
            for rrset in answer.authority
            if rrset.rdtype in (dns.rdatatype.NSEC, dns.rdatatype.NSEC3)
            and rrset.name.is_subdomain(trust.zone)
        ]
        if not proofs:
            raise _Broken(
                Security.BOGUS,
                f"{what}, but the answer carries no NSEC/NSEC3 records although {trust.zone} "
                f"is signed: a server or resolver on the path strips DNSSEC records",
            )
        limits = self.limits
        if len(proofs) > limits.dnssec_denial_records:
            raise _Broken(
                Security.INDETERMINATE,
                f"{what}, with {len(proofs)} NSEC/NSEC3 records as proof, more than the "
                f"{limits.dnssec_denial_records} mailcheck checks (a proof needs 3 at most; "
                f"piles of them are the NSEC3 attack on validators, CVE-2023-50868): "
                f"not judged",
            )
        iterations = max(
            (r.iterations for p in proofs if p.rdtype == dns.rdatatype.NSEC3 for r in p),
            default=0,
        )
        if iterations > limits.nsec3_iterations:
            raise _Broken(
                Security.INDETERMINATE,
                f"{what}, by NSEC3 records with {iterations} extra hash iterations, over the "
                f"{limits.nsec3_iterations} validators accept (RFC 9276 asks for 0; BIND and "
                f"Unbound treat such answers as insecure): not judged",
            )
        lines = []
        for proof in proofs:
            sigs = answer.find(proof.name, dns.rdatatype.RRSIG, proof.rdtype, authority=True)
            kind = dns.rdatatype.to_text(proof.rdtype)
            lines.append(
                await self._verify(proof, sigs, trust.zone, trust.keys, f"{proof.name} {kind}")
            )
        kinds = "/".join(sorted({dns.rdatatype.to_text(p.rdtype) for p in proofs}))
        return f"{what}, denied by {'; '.join(lines)} (the {kinds} proof itself is not checked)"

    # -- lookups --------------------------------------------------------------------

    async def _ask(self, name: dns.name.Name, rdtype: str) -> SignedAnswer:
        try:
            return await self.lookup.query_dnssec(name.to_text(), rdtype)
        except DNSError as exc:
            raise _Broken(
                Security.INDETERMINATE, f"the {rdtype} lookup for {name} failed: {exc}"
            ) from exc


# -- helpers ------------------------------------------------------------------------


def _memo(
    table: dict[dns.name.Name, asyncio.Task[_T]],
    key: dns.name.Name,
    make: Callable[[], Awaitable[_T]],
) -> Awaitable[_T]:
    """One task per key, shared; shielded so one caller's cancellation spares the rest."""
    task = table.get(key)
    if task is None:
        task = asyncio.ensure_future(make())
        table[key] = task
    return asyncio.shield(task)


def _steps(
    answer: SignedAnswer,
    qname: dns.name.Name,
    qtype: dns.rdatatype.RdataType,
    seen: set[dns.name.Name],
) -> list[_Step]:
    """The rrsets of one answer to judge: each CNAME (or the DNAME behind a
    synthesised one) from `qname` on, then the final rrset or its absence.
    `seen` collects the names passed, across answers, to stop loops."""
    steps: list[_Step] = []
    current = qname
    seen.add(qname)
    while True:
        rrset, sigs = _rrset_and_sigs(answer, current, qtype)
        if rrset is not None or qtype == dns.rdatatype.CNAME:
            return [*steps, _Step(current, qtype, rrset, sigs, answer)]
        cname, cname_sigs = _rrset_and_sigs(answer, current, dns.rdatatype.CNAME)
        if cname is None:
            return [*steps, _Step(current, qtype, None, None, answer)]
        target = cname[0].target
        dname = _dname_behind(answer, current, target)
        if dname is not None:
            steps.append(dname)
        else:
            steps.append(_Step(current, dns.rdatatype.CNAME, cname, cname_sigs, answer))
        if target in seen or len(seen) > _MAX_CNAMES:
            raise _Broken(
                Security.BOGUS, f"the CNAME chain from {qname} loops or is too long ({target})"
            )
        seen.add(target)
        current = target


def _dname_behind(answer: SignedAnswer, name: dns.name.Name, target: dns.name.Name) -> _Step | None:
    """The signed DNAME a resolver synthesised an (unsigned) CNAME from, if any."""
    for rrset in answer.answer:
        if rrset.rdtype != dns.rdatatype.DNAME or not name.is_subdomain(rrset.name):
            continue
        if name == rrset.name:
            continue
        try:
            synthesised = name.relativize(rrset.name).concatenate(rrset[0].target)
        except dns.exception.DNSException:
            continue
        if synthesised == target:
            sigs = answer.find(rrset.name, dns.rdatatype.RRSIG, dns.rdatatype.DNAME)
            return _Step(rrset.name, dns.rdatatype.DNAME, rrset, sigs, answer)
    return None


def _speaks_for(answer: SignedAnswer, name: dns.name.Name) -> bool:
    """Whether the answer's authority section carries the SOA of a zone holding `name`."""
    return any(
        rrset.rdtype == dns.rdatatype.SOA and name.is_subdomain(rrset.name)
        for rrset in answer.authority
    )


def _rrset_and_sigs(
    answer: SignedAnswer, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
) -> tuple[dns.rrset.RRset | None, dns.rrset.RRset | None]:
    rrset = answer.find(name, rdtype)
    if rrset is not None and len(rrset) == 0:
        rrset = None
    return rrset, answer.find(name, dns.rdatatype.RRSIG, rdtype)


def _zone_name_for(owner: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> dns.name.Name:
    """Where to look for the zone of an rrset: a DS lives on the parent side of a cut."""
    if rdtype == dns.rdatatype.DS and owner != dns.name.root:
        return owner.parent()
    return owner


def _ds_matches(
    zone: dns.name.Name, dsset: Iterable[DS], dnskeys: dns.rrset.RRset, per_tag: int
) -> list[tuple[DS, DNSKEY]]:
    """(DS, DNSKEY) pairs where the key is a zone key hashing to the DS digest;
    of the keys sharing a DS's tag and algorithm, only the first `per_tag` are hashed."""
    index = _key_index(dnskeys)
    found = []
    for ds in dsset:
        for key in index.get((ds.key_tag, ds.algorithm), [])[:per_tag]:
            if not key.flags & 0x0100 or key.protocol != 3:  # ZONE flag, RFC 4034 §2.1
                continue
            try:
                made = dns.dnssec.make_ds(zone, key, ds.digest_type, validating=True)
            except (dns.exception.DNSException, ValueError):
                continue
            if made == ds:
                found.append((ds, key))
    return found


_HELD: dict[tuple[Any, ...], None] = {}  # signatures verified, oldest first (bounded)
_HELD_LOCK = threading.Lock()  # several checks' validators run in their own threads
_HELD_KEPT = 1024
_HELD_RECORDS = 32  # a bigger rrset is verified every time, never kept


def _signature_holds(
    rrset: dns.rrset.RRset, sig: RRSIG, signer: dns.name.Name, key: DNSKEY, now: float
) -> None:
    """dns.dnssec.validate_rrsig of `sig` over `rrset` with `key`; raises as it
    does when the signature does not hold. A signature verified before over
    the same records with the same key is not verified again (a warm process
    sees the parent zones' keys and a rechecked domain's records once): the
    outcome cannot change while the signature is within its validity, which
    the caller has checked against `now`."""
    held = (rrset.name, rrset.rdclass, rrset.rdtype, frozenset(rrset), sig, signer, key)
    with _HELD_LOCK:
        if held in _HELD:
            return
    one = dns.rdataset.from_rdata(rrset.ttl, key)
    dns.dnssec.validate_rrsig(rrset, sig, {signer: one}, now=now)
    if len(rrset) <= _HELD_RECORDS:
        with _HELD_LOCK:
            _HELD[held] = None
            while len(_HELD) > _HELD_KEPT:
                del _HELD[next(iter(_HELD))]


def _key_index(rdataset: Iterable[Any]) -> dict[tuple[int, int], list[DNSKEY]]:
    """The DNSKEYs by (key tag, algorithm): each key's tag computed once."""
    index: dict[tuple[int, int], list[DNSKEY]] = {}
    for key in _dnskeys(rdataset):
        index.setdefault((key.key_id(), key.algorithm), []).append(key)
    return index


def _ds_usable(ds: DS) -> bool:
    return ds.digest_type in _DIGESTS and _algorithm_usable(ds.algorithm)


def _algorithm_usable(algorithm: int) -> bool:
    if algorithm in _DEPRECATED_ALGORITHMS:
        return False
    try:
        dns.dnssecalgs.get_algorithm_cls(algorithm)
    except dns.exception.DNSException:
        return False
    return True


def _dnskeys(rdataset: Iterable[Any]) -> list[DNSKEY]:
    return [k for k in rdataset if isinstance(k, DNSKEY)]


def _key_list(rdataset: Iterable[Any]) -> str:
    keys = _dnskeys(rdataset)
    if not keys:
        return "no DNSKEY"
    return "DNSKEY " + _some(
        [f"tag {k.key_id()} alg {k.algorithm}" for k in keys[:_SHOWN]], ", ", len(keys)
    )


def _ds_list(dsset: Iterable[DS]) -> str:
    found = list(dsset)
    shown = [f"DS tag {d.key_tag} alg {d.algorithm} digest {d.digest_type}" for d in found[:_SHOWN]]
    return _some(shown, ", ", len(found))


def _tally(items: Iterable[str]) -> list[str]:
    """Each distinct item once, with how often it came when more than once."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return [item if n == 1 else f"{item} ({n} times)" for item, n in counts.items()]


def _some(items: Sequence[str], sep: str = "; ", total: int | None = None) -> str:
    """The first few items joined, and how many more there are: a hostile answer
    can carry hundreds of records, and a reason is one sentence."""
    total = len(items) if total is None else total
    shown = sep.join(items[:_SHOWN])
    return shown if total <= _SHOWN else f"{shown}{sep}and {total - _SHOWN} more"


def _anchor_list(anchor: TrustAnchor) -> str:
    parts = [_ds_list(anchor.ds)] if anchor.ds else []
    if anchor.keys:
        parts.append(_key_list(anchor.keys))
    return "; ".join(parts)


def _plain(name: dns.name.Name) -> str:
    return "." if name == dns.name.root else name.to_text(omit_final_dot=True).lower()


def _when(timestamp: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def _day(timestamp: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(timestamp))
