"""May senders insist on TLS to the MX, and can they? The TLS stage's
`tls.policy` holds the port-25 handshakes the connect stage made against what
the domain publishes, as a DANE (RFC 7672) or MTA-STS (RFC 8461) sender would:
the MX hosts' TLSA records (checks.stages.dane) and the MTA-STS policy
(checks.stages.mtasts).
"""

from __future__ import annotations

from checks.core.model import Stage
from checks.protocols.session import Session
from checks.rules import dane, tls
from checks.stages.dane import DaneHosts
from checks.stages.keys import MX_SESSIONS, STS, TLSA
from checks.stages.mtasts import STSState
from checks.stages.probe import Probe, ProbeContext
from checks.stages.sessions import reproduce


def _no_tls(s: Session) -> str:
    # A conversation that went through without TLS never saw STARTTLS offered.
    return "offers no STARTTLS" if s.complete else "its TLS handshake fails"


async def probe_tls_policy(ctx: ProbeContext) -> None:
    sessions: list[Session] = ctx.result(MX_SESSIONS)
    sts: STSState = ctx.result(STS)
    dane_hosts: DaneHosts = ctx.result(TLSA)
    now = tls.now_utc()
    for s in sessions:
        ep = s.endpoint
        host = ep.host
        records = dane_hosts.records.get(host)
        failed = s.tls is None
        if records is not None:
            if failed:
                ctx.add(
                    "dane.tls.unavailable",
                    target=ep.target(),
                    summary=f"{ep.label()} has DANE TLSA records but {_no_tls(s)}",
                    evidence=list(s.transcript[-8:]),
                    reproduce=reproduce(ep),
                )
            else:
                assert s.tls is not None
                verdict = dane.match(records, s.tls.chain_der, host, now)
                if verdict.ok and verdict.matched is not None:
                    which = (
                        "the server's certificate"
                        if verdict.depth == 0
                        else f"certificate {verdict.depth} of the chain it sends"
                    )
                    ctx.add(
                        "dane.ok",
                        target=ep.target(),
                        summary=f"{ep.label()}: TLSA {verdict.matched.text()[:24]}… "
                        f"({verdict.matched.kind}) matches {which}",
                        reproduce=dane.reproduce(host, ep.port, records),
                    )
                else:
                    ctx.add(
                        "dane.tlsa.mismatch",
                        target=ep.target(),
                        summary=f"{ep.label()}: " + "; ".join(verdict.problems),
                        evidence=[r.text() for r in records],
                        reproduce=dane.reproduce(host, ep.port, records),
                    )
        if sts.enforces(host) and failed:
            ctx.add(
                "mtasts.tls.unavailable",
                target=ep.target(),
                summary=f"{ep.label()} is covered by an enforced MTA-STS policy but {_no_tls(s)}",
                evidence=list(s.transcript[-8:]),
                reproduce=reproduce(ep),
            )


PROBES: tuple[Probe, ...] = (
    Probe(
        "tls.policy",
        Stage.TLS,
        probe_tls_policy,
        needs=("connect.smtp", "policy.mtasts", "policy.tlsa"),
    ),
)
