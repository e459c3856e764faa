"""SPF diagnosis: a domain's record judged on its own, without a client address.

    report = await diagnose("example.com", lookup)
    report.tree.lines()   # which include costs how many of the 10 lookups
    report.problems       # +all, over the limit, includes without a record, ...

Shares the evaluator's lookup seam and tree types (`checks.rules.spf`).

RFC 7208's limits (10 lookups, 2 void) bound an evaluation, not this walk:
a diagnosis shows the whole tree, so a hostile record of many includes of
many terms would have it ask thousands of questions about names the record
chooses (a victim's). `max_queries` bounds the questions it asks; what it
did not ask is in `Diagnosis.unasked`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from checks.core.errors import QueryBudgetExceeded, ResolverFailure
from checks.rules.spf import (
    MAX_LOOKUPS,
    MAX_NAMES,
    MAX_VOID_LOOKUPS,
    LookupNode,
    SPFLookup,
    _Abort,
    _answer,
    _Branch,
    _fetch_record,
)
from checks.rules.spfmacro import SPFSyntaxError, expand, letters, parse_domain_spec, target_name
from checks.rules.spfparse import Mechanism, parse_record

# -- diagnosis: the record itself, no client address ------------------------------------


@dataclass(frozen=True)
class Diagnosis:
    domain: str
    record: str | None
    tree: LookupNode  # every include/redirect with its lookup cost
    all_term: str | None  # "-all", "~all", "?all", "+all" in effect (after redirects)
    syntax_errors: tuple[str, ...]  # "domain: message naming the term"
    missing_includes: tuple[str, ...]  # include targets without an SPF record
    problems: tuple[str, ...]  # everything above and more, one sentence each
    unasked: tuple[str, ...] = ()  # questions over the query budget: "TXT example.net"

    @property
    def lookups(self) -> int:
        return self.tree.lookups

    @property
    def void_lookups(self) -> int:
        return self.tree.void_lookups

    @property
    def over_limit(self) -> bool:
        return self.lookups > MAX_LOOKUPS

    @property
    def weak_all(self) -> bool:
        """The record lets unlisted hosts through: +all, ?all, or no all at all."""
        return self.record is not None and self.all_term not in ("-all", "~all")


async def diagnose(
    domain: str, lookup: SPFLookup, *, max_records: int = 40, max_queries: int = 100
) -> Diagnosis:
    """Walk a domain's SPF record without a client: the include/redirect tree
    with the lookups each branch costs if no mechanism matches first, void
    lookups, syntax errors, weak endings and includes of domains without SPF.

    Terms whose target depends on the client or sender (%{i}, %{s}, ...) and
    ptr are counted but not queried. Walks at most `max_records` records and
    asks at most `max_queries` distinct questions (the lookups of the terms
    beyond are counted, their answers unknown).
    """
    metered = _Metered(lookup, max_queries)
    survey = _Survey(metered, max_records)
    name = domain.removesuffix(".").lower()
    root = _Branch(name)
    all_term = await survey.walk(name, root, (name,))
    tree = root.freeze()
    problems = list(survey.problems)
    if root.missing:
        problems.insert(0, f"{name} has no SPF record")
    elif root.valid:
        if tree.lookups > MAX_LOOKUPS:
            problems.append(
                f"{tree.lookups} DNS lookups; receivers stop at {MAX_LOOKUPS} with permerror"
            )
        if tree.void_lookups > MAX_VOID_LOOKUPS:
            problems.append(
                f"{tree.void_lookups} lookups find nothing; receivers stop at "
                f"{MAX_VOID_LOOKUPS} with permerror"
            )
        if all_term in ("+all", "?all", None):
            problems.append(_WEAK_ALL[all_term].format(domain=name))
    return Diagnosis(
        domain=name,
        record=root.record,
        tree=tree,
        all_term=all_term,
        syntax_errors=tuple(survey.syntax_errors),
        missing_includes=tuple(dict.fromkeys(survey.missing)),
        problems=tuple(problems),
        unasked=tuple(metered.unasked),
    )


_WEAK_ALL = {
    "+all": "the record ends in +all: any host on the internet may send as {domain}",
    "?all": "the record ends in ?all: unlisted hosts get neutral, which means no policy",
    None: "the record has no all mechanism: unlisted hosts get neutral (add ~all or -all)",
}


class _Survey:
    def __init__(self, lookup: _Metered, max_records: int) -> None:
        self.lookup = lookup
        self.budget = max_records
        self.problems: list[str] = []
        self.syntax_errors: list[str] = []
        self.missing: list[str] = []

    def _problem(self, branch: _Branch, text: str) -> None:
        branch.problem = branch.problem or text
        self.problems.append(f"{branch.term or branch.domain}: {text}")

    async def walk(self, domain: str, branch: _Branch, path: tuple[str, ...]) -> str | None:
        """Fill `branch` from `domain`'s record; returns the all term in effect."""
        self.budget -= 1
        if self.budget < 0:
            self._problem(branch, "not followed: too many records to walk")
            return None
        try:
            text = await _fetch_record(self.lookup, domain, branch)
        except _Abort as exc:
            self.problems.append(exc.problem)
            return None
        if text is None:
            return None
        try:
            record = parse_record(text)
        except SPFSyntaxError as exc:
            self.syntax_errors.append(f"{domain}: {exc}")
            self._problem(branch, f"syntax error, receivers return permerror: {exc}")
            return None
        branch.valid = True
        # Evaluation stops at all: later terms cost nothing and do nothing.
        terms = list(record.mechanisms)
        if record.all is not None:
            cut = terms.index(record.all) + 1
            if terms[cut:]:
                ignored = " ".join(m.text for m in terms[cut:])
                self._problem(branch, f"terms after {record.all.text} are never used: {ignored}")
            terms = terms[:cut]
        await asyncio.gather(*(self._term(m, domain, branch, path) for m in terms if m.needs_dns))
        if record.all is not None:
            return f"{record.all.qualifier}all"
        if record.redirect is None:
            return None
        target = self._static_target(record.redirect.value, domain)
        child = branch.child(target or record.redirect.value, record.redirect.text)
        return await self._follow(child, target, path, "redirect")

    async def _follow(
        self, child: _Branch, target: str | None, path: tuple[str, ...], kind: str
    ) -> str | None:
        if target is None:
            dynamic = child.domain != "" and _dynamic(child.domain)
            if not dynamic:
                self._problem(child, f"{child.domain!r} is not a name DNS can look up")
            else:
                child.problem = "target depends on the sender or client; not followed"
            return None
        if target in path:
            self._problem(child, f"{kind} loop: {' -> '.join((*path, target))}")
            return None
        all_term = await self.walk(target, child, (*path, target))
        if child.missing:
            self._problem(child, f"{target} has no SPF record: receivers return permerror")
            if kind == "include":
                self.missing.append(target)
        return all_term

    def _static_target(self, spec: str, domain: str) -> str | None:
        """The target name; None if it depends on the sender or client (macros
        other than %{d}) or cannot be looked up."""
        return (
            None if _dynamic(spec) else target_name(expand(parse_domain_spec(spec), {"d": domain}))
        )

    async def _term(
        self, mech: Mechanism, domain: str, branch: _Branch, path: tuple[str, ...]
    ) -> None:
        if mech.name == "include":
            target = self._static_target(str(mech.domain_spec), domain)
            child = branch.child(target or str(mech.domain_spec), mech.text)
            await self._follow(child, target, path, "include")
            return
        branch.own += 1
        if mech.name == "ptr":
            self._problem(branch, f"{mech.text}: slow and unreliable; RFC 7208 5.5: do not use")
            return
        target = self._static_target(mech.domain_spec, domain) if mech.domain_spec else domain
        if target is None:
            if not _dynamic(str(mech.domain_spec)):
                self._problem(branch, f"{mech.text}: not a name DNS can look up")
            return
        if self.lookup.spent:  # thousands of terms may follow: no task, no exception each
            self.lookup.unasked += [f"{t} {target}" for t in _QUESTIONS[mech.name]]
            return
        try:
            if mech.name == "mx":
                hosts = [h for _, h in await _answer(self.lookup.mx(target))]
                void = not hosts
                branch.address += len([h for h in hosts if h not in ("", ".")])
                if len(hosts) > MAX_NAMES:
                    self._problem(
                        branch, f"{mech.text}: {len(hosts)} MX names; over {MAX_NAMES} is permerror"
                    )
            elif mech.name == "a":
                found = await asyncio.gather(
                    _answer(self.lookup.a(target)), _answer(self.lookup.aaaa(target))
                )
                void = not any(found)
            else:  # exists
                void = not await _answer(self.lookup.a(target))
        except QueryBudgetExceeded:
            return  # counted in Diagnosis.unasked; one problem a term would be thousands
        except ResolverFailure as exc:
            self._problem(branch, f"{mech.text}: {exc}")
            return
        if void:
            branch.void += 1
            self._problem(branch, f"{mech.text}: {target} has no records (a void lookup)")


_QUESTIONS = {"a": ("A", "AAAA"), "mx": ("MX",), "exists": ("A",)}  # what each term asks


class _Metered:
    """The SPFLookup a diagnosis asks through: each distinct question counts
    once; past `limit`, QueryBudgetExceeded without asking."""

    def __init__(self, lookup: SPFLookup, limit: int) -> None:
        self._lookup = lookup
        self._limit = limit
        self._asked: set[tuple[str, str]] = set()
        self.unasked: list[str] = []

    def _spend(self, rdtype: str, name: str) -> None:
        question = (rdtype, name.rstrip(".").lower())
        if question in self._asked:
            return
        if len(self._asked) >= self._limit:
            self.unasked.append(f"{rdtype} {name}")
            raise QueryBudgetExceeded(
                "spf_queries",
                name,
                rdtype,
                f"not asked: the diagnosis asks at most {self._limit} questions",
            )
        self._asked.add(question)

    @property
    def spent(self) -> bool:
        return len(self._asked) >= self._limit

    async def txt(self, name: str) -> list[str]:
        self._spend("TXT", name)
        return await self._lookup.txt(name)

    async def a(self, name: str) -> list[str]:
        self._spend("A", name)
        return await self._lookup.a(name)

    async def aaaa(self, name: str) -> list[str]:
        self._spend("AAAA", name)
        return await self._lookup.aaaa(name)

    async def mx(self, name: str) -> list[tuple[int, str]]:
        self._spend("MX", name)
        return await self._lookup.mx(name)

    async def ptr(self, address: str) -> list[str]:
        self._spend("PTR", address)
        return await self._lookup.ptr(address)


def _dynamic(spec: str) -> bool:
    """Whether a domain-spec needs the sender or client (any macro but %{d})."""
    return bool(letters(parse_domain_spec(spec)) - {"d"})
