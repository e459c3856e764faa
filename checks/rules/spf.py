"""SPF: RFC 7208 check_host(), asynchronous, with the lookup tree a diagnosis needs.

    result = await check_host("192.0.2.3", "example.com", "alice@example.com", lookup)
    result.result          # Verdict.FAIL ("fail")
    result.tree.lines()    # ["example.com  7 lookups", "  include:_spf.example.net  4 lookups"]

The static view of a record (no client address: the lookup tree and its
problems) is in `spfdiagnose`.

Syntax lives in `spfparse`, the macro language in `spfmacro`; this module
walks records. DNS comes through the `SPFLookup` seam (the policy stage's
`NetworkLookup` puts it on the network door; tests use a zone in memory), so
every rule here runs without a network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, TypeVar

from checks.core.errors import DNSError, NXDomain, ResolverFailure
from checks.core.names import within
from checks.rules.spfmacro import (
    MAX_DOMAIN,
    MAX_LABEL,
    Part,
    SPFSyntaxError,
    expand,
    is_toplabel,
    letters,
    parse_domain_spec,
    parse_macro_string,
    target_name,
)
from checks.rules.spfparse import QUALIFIERS, Mechanism, Record, parse_record, select_record

__all__ = [
    "LookupNode",
    "Result",
    "SPFLookup",
    "SPFSyntaxError",
    "Verdict",
    "check_host",
    "check_mail_from",
    "parse_record",
    "select_record",
]

MAX_LOOKUPS = 10  # include a mx ptr exists redirect, per check_host() (RFC 7208 4.6.4)
MAX_VOID_LOOKUPS = 2  # DNS answers with no records (NODATA or NXDOMAIN)
MAX_NAMES = 10  # MX names per mx, PTR names per ptr / %{p}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
T = TypeVar("T")


class SPFLookup(Protocol):
    """The DNS questions SPF asks. Each raises NXDomain when the name does not
    exist and ResolverFailure when no answer came (SERVFAIL, timeout); a name
    without records of that type gives an empty list."""

    async def txt(self, name: str) -> list[str]: ...  # each record's strings joined

    async def a(self, name: str) -> list[str]: ...

    async def aaaa(self, name: str) -> list[str]: ...

    async def mx(self, name: str) -> list[tuple[int, str]]: ...  # "" for a null MX

    async def ptr(self, address: str) -> list[str]: ...


class Verdict(StrEnum):
    NONE = "none"
    NEUTRAL = "neutral"
    PASS = "pass"
    FAIL = "fail"
    SOFTFAIL = "softfail"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


@dataclass(frozen=True)
class LookupNode:
    """One SPF record in the walk: the domain, or an include/redirect of it."""

    domain: str
    term: str | None = None  # "include:_spf.example.net", "redirect=..."; None at the top
    record: str | None = None  # None: no record found (or not fetched)
    lookups: int = 0  # counted lookups: the opening term, this record's terms, nested ones
    void_lookups: int = 0  # this record's and nested
    address_lookups: int = 0  # A/AAAA of MX and PTR names: needed, but not counted
    problem: str | None = None
    children: tuple[LookupNode, ...] = ()

    def walk(self) -> Iterator[LookupNode]:
        yield self
        for child in self.children:
            yield from child.walk()

    def lines(self, indent: str = "  ") -> list[str]:
        """The tree as text, one record a line, e.g. "  include:x.example  4 lookups"."""
        out = []

        def visit(node: LookupNode, depth: int) -> None:
            label = node.term or node.domain
            cost = f"{node.lookups} lookup{'s' if node.lookups != 1 else ''}"
            void = f", {node.void_lookups} void" if node.void_lookups else ""
            problem = f"  ({node.problem})" if node.problem else ""
            out.append(f"{indent * depth}{label}  {cost}{void}{problem}")
            for child in node.children:
                visit(child, depth + 1)

        visit(self, 0)
        return out


@dataclass(frozen=True)
class Result:
    result: Verdict
    domain: str
    mechanism: str | None = None  # the term that decided, e.g. "-all"; None for the default
    explanation: str | None = None  # exp= text (or the default), for fail only
    problem: str | None = None  # why permerror/temperror, naming the term or domain
    lookups: int = 0
    void_lookups: int = 0
    tree: LookupNode | None = None


class _Branch:
    """A LookupNode under construction (the walk stops anywhere on an error)."""

    def __init__(self, domain: str, term: str | None = None) -> None:
        self.domain = domain
        self.term = term
        self.record: str | None = None
        self.missing = False  # the name has no SPF record
        self.valid = False  # the record parsed
        self.own = 0  # DNS terms of this record other than include/redirect
        self.void = 0
        self.address = 0
        self.problem: str | None = None
        self.children: list[_Branch] = []

    def child(self, domain: str, term: str) -> _Branch:
        branch = _Branch(domain, term)
        self.children.append(branch)
        return branch

    def freeze(self) -> LookupNode:
        children = tuple(c.freeze() for c in self.children)
        return LookupNode(
            domain=self.domain,
            term=self.term,
            record=self.record,
            lookups=(self.term is not None) + self.own + sum(c.lookups for c in children),
            void_lookups=self.void + sum(c.void_lookups for c in children),
            address_lookups=self.address + sum(c.address_lookups for c in children),
            problem=self.problem,
            children=children,
        )


class _Abort(Exception):
    """permerror or temperror: check_host() ends at once, whatever the nesting."""

    def __init__(self, verdict: Verdict, problem: str) -> None:
        super().__init__(problem)
        self.verdict = verdict
        self.problem = problem


@dataclass(frozen=True)
class _Outcome:
    verdict: Verdict
    mechanism: str | None = None
    explanation: str | None = None


@dataclass(frozen=True)
class _Client:
    ip: IPAddress
    sender: str
    local: str
    sender_domain: str
    helo: str
    receiver: str
    now: int

    def macro_values(self, domain: str) -> dict[str, str]:
        v4 = self.ip.version == 4
        return {
            "s": self.sender,
            "l": self.local,
            "o": self.sender_domain,
            "d": domain,
            # RFC 7208 7.3: IPv6 "i" is dot-separated nibbles, for %{ir}.%{v}.arpa
            "i": str(self.ip) if v4 else ".".join(self.ip.packed.hex()),
            "v": "in-addr" if v4 else "ip6",
            "h": self.helo,
            "c": str(self.ip),
            "r": self.receiver,
            "t": str(self.now),
        }


class _Evaluation:
    def __init__(self, client: _Client, lookup: SPFLookup, default_explanation: str | None):
        self.client = client
        self.lookup = lookup
        self.default_explanation = default_explanation
        self.lookups = 0
        self.voids = 0
        self._ptr_names: list[str] | None = None
        self._validated: dict[str, bool] = {}  # PTR name -> resolves back to the client

    async def evaluate(self, domain: str, branch: _Branch, *, included: bool) -> _Outcome:
        """check_host() for one domain. Returns none/neutral/pass/fail/softfail;
        raises _Abort for permerror and temperror."""
        record = await self._record(domain, branch)
        if record is None:
            return _Outcome(Verdict.NONE)
        for mech in record.mechanisms:
            if mech.needs_dns:
                self._count(mech.text, branch)
                branch.own += mech.name != "include"  # an include is its child's cost
            if await self._matches(mech, domain, branch):
                verdict = Verdict(QUALIFIERS[mech.qualifier])
                # Only the exp= of the record that decided, and never inside an include.
                explain = verdict is Verdict.FAIL and not included
                explanation = await self._explain(record, domain) if explain else None
                return _Outcome(verdict, mech.text, explanation)
        redirect = record.redirect
        if redirect is None:
            return _Outcome(Verdict.NEUTRAL)
        self._count(redirect.text, branch)
        target = await self._target(redirect.value, domain)
        child = branch.child(target or redirect.value, redirect.text)
        outcome = await self.evaluate(target, child, included=included) if target else None
        if outcome is None or outcome.verdict is Verdict.NONE:
            raise self._abort(child, Verdict.PERMERROR, f"{redirect.text}: no SPF record there")
        return outcome

    async def _record(self, domain: str, branch: _Branch) -> Record | None:
        text = await _fetch_record(self.lookup, domain, branch)
        if text is None:
            return None
        try:
            record = parse_record(text)
        except SPFSyntaxError as exc:
            raise self._abort(branch, Verdict.PERMERROR, f"{domain}: {exc}") from None
        branch.valid = True
        return record

    def _abort(self, branch: _Branch, verdict: Verdict, problem: str) -> _Abort:
        branch.problem = problem
        return _Abort(verdict, problem)

    def _count(self, term: str, branch: _Branch) -> None:
        self.lookups += 1
        if self.lookups > MAX_LOOKUPS:
            raise self._abort(
                branch,
                Verdict.PERMERROR,
                f"{term}: more than {MAX_LOOKUPS} DNS lookups (RFC 7208 4.6.4)",
            )

    def _void(self, term: str, branch: _Branch) -> None:
        self.voids += 1
        branch.void += 1
        if self.voids > MAX_VOID_LOOKUPS:
            raise self._abort(
                branch,
                Verdict.PERMERROR,
                f"{term}: more than {MAX_VOID_LOOKUPS} lookups found no records (RFC 7208 4.6.4)",
            )

    async def _target(self, spec: str, domain: str) -> str | None:
        return target_name(await self._expand(parse_domain_spec(spec), domain))

    async def _expand(self, parts: tuple[Part, ...], domain: str) -> str:
        values = self.client.macro_values(domain)
        if "p" in letters(parts):
            values["p"] = await self._validated_name(domain)
        return expand(parts, values)

    async def _matches(self, mech: Mechanism, domain: str, branch: _Branch) -> bool:
        ip = self.client.ip
        if mech.name == "all":
            return True
        if mech.network is not None:  # ip4, ip6: an IPv4 client never matches ip6
            return ip.version == mech.network.version and ip in mech.network
        target = await self._target(mech.domain_spec, domain) if mech.domain_spec else domain
        if mech.name == "include":
            return await self._include(mech, target, branch)
        if target is None:  # an unqueryable name (empty or long label) matches nothing
            return False
        try:
            if mech.name == "a":
                return await self._match_a(mech, target, branch)
            if mech.name == "mx":
                return await self._match_mx(mech, target, branch)
            if mech.name == "ptr":
                return await self._match_ptr(mech, target, branch)
            found = await _answer(self.lookup.a(target))  # exists: always A (RFC 7208 5.7)
        except ResolverFailure as exc:
            raise self._abort(branch, Verdict.TEMPERROR, f"{mech.text}: {exc}") from None
        if not found:
            self._void(mech.text, branch)
        return bool(found)

    async def _include(self, mech: Mechanism, target: str | None, branch: _Branch) -> bool:
        child = branch.child(target or str(mech.domain_spec), mech.text)
        outcome = await self.evaluate(target, child, included=True) if target else None
        if outcome is None or outcome.verdict is Verdict.NONE:
            # RFC 7208 5.2: including a domain without a record is an error, not a no-match.
            raise self._abort(child, Verdict.PERMERROR, f"{mech.text}: no SPF record there")
        return outcome.verdict is Verdict.PASS

    async def _addresses(self, name: str) -> list[IPAddress]:
        fetch = self.lookup.a if self.client.ip.version == 4 else self.lookup.aaaa
        return _parse_addresses(await _answer(fetch(name)))

    def _in(self, addresses: list[IPAddress], mech: Mechanism) -> bool:
        ip = self.client.ip
        cidr = mech.cidr4 if ip.version == 4 else mech.cidr6
        prefix = ip.max_prefixlen if cidr is None else cidr
        return any(ip in ipaddress.ip_network(f"{a}/{prefix}", strict=False) for a in addresses)

    async def _match_a(self, mech: Mechanism, target: str, branch: _Branch) -> bool:
        addresses = await self._addresses(target)
        if not addresses:
            self._void(mech.text, branch)
        return self._in(addresses, mech)

    async def _match_mx(self, mech: Mechanism, target: str, branch: _Branch) -> bool:
        hosts = [h for _, h in await _answer(self.lookup.mx(target))]
        if not hosts:
            self._void(mech.text, branch)
            return False
        if len(hosts) > MAX_NAMES:
            raise self._abort(
                branch,
                Verdict.PERMERROR,
                f"{mech.text}: {target} has {len(hosts)} MX records; at most {MAX_NAMES} may "
                "be looked up (RFC 7208 4.6.4)",
            )
        names = [h for h in hosts if h not in ("", ".")]  # a null MX names no host
        branch.address += len(names)
        found = await asyncio.gather(*(self._addresses(n) for n in names), return_exceptions=True)
        if any(isinstance(f, list) and self._in(f, mech) for f in found):
            return True
        for failure in found:
            if isinstance(failure, BaseException):
                raise failure
        return False

    async def _match_ptr(self, mech: Mechanism, target: str, branch: _Branch) -> bool:
        names = await self._reverse_names()
        if not names:
            self._void(mech.text, branch)
        # Only names within the target can match: validate just those (RFC 7208 5.5).
        candidates = [n for n in names if within(n, target)]
        branch.address += len(candidates)
        return bool(await self._validate(candidates))

    async def _reverse_names(self) -> list[str]:
        """The client's first 10 PTR names; [] also when the lookup fails (RFC 7208 5.5)."""
        if self._ptr_names is None:
            try:
                names = await _answer(self.lookup.ptr(str(self.client.ip)))
            except ResolverFailure:
                names = []
            self._ptr_names = [n.rstrip(".").lower() for n in names[:MAX_NAMES]]
        return self._ptr_names

    async def _validate(self, names: list[str]) -> list[str]:
        """The names that resolve back to the client address; DNS errors skip a
        name (RFC 7208 5.5)."""
        todo = [n for n in names if n not in self._validated]
        found = await asyncio.gather(*(self._addresses(n) for n in todo), return_exceptions=True)
        for name, addresses in zip(todo, found, strict=True):
            if isinstance(addresses, BaseException) and not isinstance(addresses, DNSError):
                raise addresses
            self._validated[name] = isinstance(addresses, list) and self.client.ip in addresses
        return [n for n in names if self._validated[n]]

    async def _validated_name(self, domain: str) -> str:
        """%{p}: a validated name, preferring the domain itself, then its subdomains."""
        validated = await self._validate(await self._reverse_names())
        for wanted in (lambda n: n == domain, lambda n: within(n, domain), lambda n: True):
            match = next((n for n in validated if wanted(n)), None)
            if match is not None:
                return match
        return "unknown"

    async def _explain(self, record: Record, domain: str) -> str | None:
        """The exp= text, or the default. Problems here never change the result
        (RFC 7208 6.2): no record, several, a DNS error, a bad macro."""
        if record.exp is None:
            return self.default_explanation
        target = await self._target(record.exp.value, domain)
        try:
            txts = await self.lookup.txt(target) if target else []
            if len(txts) != 1:
                return self.default_explanation
            return await self._expand(parse_macro_string(txts[0], explanation=True), domain)
        except (NXDomain, ResolverFailure, SPFSyntaxError):
            return self.default_explanation


async def _fetch_record(lookup: SPFLookup, domain: str, branch: _Branch) -> str | None:
    """The domain's SPF record, None when it has none. Raises _Abort for a DNS
    failure (temperror) or several records (permerror)."""
    try:
        txts = await lookup.txt(domain)
    except NXDomain:
        txts = []
    except ResolverFailure as exc:
        branch.problem = f"TXT lookup for {domain} failed: {exc}"
        raise _Abort(Verdict.TEMPERROR, branch.problem) from None
    try:
        text = select_record(txts)
    except SPFSyntaxError as exc:
        branch.problem = f"{domain}: {exc}"
        raise _Abort(Verdict.PERMERROR, branch.problem) from None
    branch.record = text
    branch.missing = text is None
    if text is None:
        branch.problem = "no SPF record"
    return text


async def _answer(pending: Awaitable[list[T]]) -> list[T]:
    """The records, with NXDOMAIN read as none (the caller counts a void lookup)."""
    try:
        return await pending
    except NXDomain:
        return []


def _parse_addresses(texts: list[str]) -> list[IPAddress]:
    addresses = []
    for text in texts:
        try:
            addresses.append(ipaddress.ip_address(text))
        except ValueError:  # a broken record is no address of the client's
            continue
    return addresses


# -- check_host() -----------------------------------------------------------------------


async def check_host(
    ip: str | IPAddress,
    domain: str,
    sender: str,
    lookup: SPFLookup,
    helo: str | None = None,
    *,
    receiver: str = "unknown",
    default_explanation: str | None = None,
    deadline: float = 20.0,
    now: float | None = None,
) -> Result:
    """RFC 7208 check_host(): may `ip` send mail for `domain`?

    `sender` is the MAIL FROM address (or postmaster@HELO); `helo`, `receiver`
    and `now` feed the h, r and t macros. `explanation` is the exp= text of a
    fail, else `default_explanation`; without `helo`, %{h} is "unknown".
    An IPv4-mapped IPv6 address counts as
    IPv4. After `deadline` seconds the result is temperror (RFC 7208 4.6.4
    asks for a time limit of at least 20 s). Raises ValueError for a bad `ip`.
    """
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    local, _, sender_domain = sender.rpartition("@")
    local = local or "postmaster"  # RFC 7208 4.3
    sender_domain = sender_domain or domain
    client = _Client(
        ip=address,
        sender=f"{local}@{sender_domain}",
        local=local,
        sender_domain=sender_domain,
        helo=helo or "unknown",
        receiver=receiver,
        now=int(time.time() if now is None else now),
    )
    name = domain.removesuffix(".").lower()
    root = _Branch(name)
    if not _checkable(name):  # RFC 7208 4.3: a malformed or one-label domain has no policy
        root.problem = "not a fully qualified domain name"
        return Result(Verdict.NONE, name, tree=root.freeze())
    evaluation = _Evaluation(client, lookup, default_explanation)
    try:
        async with asyncio.timeout(deadline):
            outcome = await evaluation.evaluate(name, root, included=False)
    except _Abort as exc:
        outcome = _Outcome(exc.verdict)
        problem: str | None = exc.problem
    except TimeoutError:  # the deadline; DNS timeouts arrive as _Abort
        outcome = _Outcome(Verdict.TEMPERROR)
        problem = f"no result within {deadline:g} s"
    else:
        problem = None
    return Result(
        result=outcome.verdict,
        domain=name,
        mechanism=outcome.mechanism,
        explanation=outcome.explanation,
        problem=problem,
        lookups=evaluation.lookups,
        void_lookups=evaluation.voids,
        tree=root.freeze(),
    )


async def check_mail_from(
    ip: str | IPAddress,
    mail_from: str,
    helo: str,
    lookup: SPFLookup,
    *,
    receiver: str = "unknown",
    default_explanation: str | None = None,
) -> Result:
    """check_host() for an SMTP MAIL FROM; a null sender is postmaster@HELO (RFC 7208 2.4)."""
    sender = mail_from or f"postmaster@{helo}"
    return await check_host(
        ip,
        sender.rpartition("@")[2],
        sender,
        lookup,
        helo,
        receiver=receiver,
        default_explanation=default_explanation,
    )


def _checkable(domain: str) -> bool:
    labels = domain.split(".")
    return (
        len(labels) > 1
        and len(domain) <= MAX_DOMAIN
        and all(0 < len(label) <= MAX_LABEL for label in labels)
        and is_toplabel(labels[-1])  # not an address or [literal]
    )
