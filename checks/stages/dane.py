"""DANE (RFC 7672), the policy stage: the TLSA records of each MX host at
`_25._tcp.<host>`, validated with DNSSEC, for the TLS stage's `tls.policy`
to match against the certificates port 25 sends.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from checks.core.model import Stage, Target
from checks.rules import dane
from checks.rules.dnssec import Security
from checks.stages.dns import MailHost
from checks.stages.dnssec import delv, report_security, validator_for
from checks.stages.keys import MX_HOSTS, TLSA
from checks.stages.probe import Probe, ProbeContext


@dataclass(frozen=True)
class DaneHosts:
    """MX host -> its usable, DNSSEC-validated TLSA records (DANE applies there)."""

    records: dict[str, tuple[dane.TLSA, ...]] = field(default_factory=dict)


def tlsa_name(host: str, port: int = 25) -> str:
    return f"_{port}._tcp.{host}"


async def probe_tlsa(ctx: ProbeContext) -> DaneHosts:
    hosts: tuple[MailHost, ...] = ctx.result(MX_HOSTS)
    names = list(dict.fromkeys(h.host for h in hosts))
    validator = validator_for(ctx.net)
    results = await asyncio.gather(*(validator.validate(tlsa_name(h), "TLSA") for h in names))
    found: dict[str, tuple[dane.TLSA, ...]] = {}
    for host, v in zip(names, results, strict=True):
        if not v.records and v.status is not Security.BOGUS:
            continue  # no TLSA records: no DANE for this host, nothing wrong
        target = Target(host=tlsa_name(host))
        if v.status is not Security.SECURE:
            if v.status is Security.INSECURE:
                ctx.add(
                    "dane.tlsa.unsigned",
                    target=target,
                    summary=f"{host} publishes TLSA records but {v.reason}",
                    evidence=[r.to_text() for r in v.records],
                    reproduce=delv(ctx, tlsa_name(host), "TLSA"),
                )
            else:
                report_security(ctx, v, f"TLSA {tlsa_name(host)}: {v.reason}", target)
            continue
        records = tuple(dane.from_rdata(r) for r in v.records)
        usable = tuple(r for r in records if r.usable)
        if not usable:
            ctx.add(
                "dane.tlsa.unusable",
                target=target,
                summary=f"{host}: none of its {len(records)} TLSA record(s) is DANE-TA(2) or "
                "DANE-EE(3) with known parameters, so SMTP senders ignore them",
                evidence=[r.text() for r in records],
                reproduce=ctx.net.dig(tlsa_name(host), "TLSA"),
            )
            continue
        found[host] = usable
    ctx.fact("dane", {host: [r.text() for r in recs] for host, recs in found.items()})
    return DaneHosts(found)


PROBES: tuple[Probe, ...] = (Probe(TLSA.name, Stage.POLICY, probe_tlsa, needs=("dns.mx.hosts",)),)
