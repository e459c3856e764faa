"""DNSSEC, the policy stage: is the domain's MX answer signed, and does its
chain of trust hold? The validator (checks.rules.dnssec) asks through the
door, one per check (`validator_for`), shared with the TLSA lookups.
"""

from __future__ import annotations

from checks.core.model import Stage, Target
from checks.net.door import Network
from checks.rules.dnssec import Security, Validated, Validator
from checks.stages.keys import MX_SET
from checks.stages.probe import Probe, ProbeContext


def validator_for(net: Network) -> Validator:
    """The check's DNSSEC Validator, asking through this door, made on first
    use with the configured trust anchors (the IANA root's when none are)."""
    found = net.memo.get("dnssec.validator")
    if not isinstance(found, Validator):
        found = net.memo["dnssec.validator"] = Validator(
            net, net.config.cpu, net.config.trust_anchors
        )
    return found


def delv(ctx: ProbeContext, name: str, rdtype: str) -> str:
    """The command that repeats a validation by hand (BIND's delv, in dnsutils)."""
    server = ctx.net.dig(name, rdtype).partition(" @")[2]
    at = f" @{server}" if server else ""
    return f"delv{at} {rdtype} {name} +vtrace"


_STATUS_CODES = {
    Security.SECURE: "dnssec.ok",
    Security.INSECURE: "dnssec.unsigned",
    Security.BOGUS: "dnssec.bogus",
    Security.INDETERMINATE: "dnssec.inconclusive",
}


def report_security(ctx: ProbeContext, v: Validated, summary: str, target: Target) -> None:
    ctx.add(
        _STATUS_CODES[v.status],
        target=target,
        summary=summary,
        evidence=list(v.chain),
        reproduce=delv(ctx, v.name, v.rdtype),
    )


async def probe_dnssec(ctx: ProbeContext) -> Validated | None:
    if ctx.result(MX_SET) is None:
        return None
    domain = ctx.domain
    v = await validator_for(ctx.net).validate(domain, "MX")
    if v.status is Security.SECURE:
        summary = f"{v.zone or domain} is signed; its MX records validate"
    elif v.status is Security.INSECURE:
        summary = v.reason
    else:
        summary = f"{domain} MX: {v.reason}"
    report_security(ctx, v, summary, Target(host=domain))
    ctx.fact("dnssec", {"status": v.status.value, "zone": v.zone, "reason": v.reason})
    return v


PROBES: tuple[Probe, ...] = (Probe("policy.dnssec", Stage.POLICY, probe_dnssec, needs=("dns.mx",)),)
