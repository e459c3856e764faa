"""MTA-STS (RFC 8461), the policy stage: the `_mta-sts` TXT record and the
policy file fetched over HTTPS as a sending server fetches it (no redirects,
the certificate verified), judged by checks.rules.mtasts. `STSState` says which
MX hosts an enforced policy covers, for the TLS stage's `tls.policy`.
"""

from __future__ import annotations

from dataclasses import dataclass

from checks.core.errors import ConnectionClosed, DNSError, NetError, TargetRefused
from checks.core.model import Severity, Stage, Target
from checks.net import http
from checks.rules import mtasts
from checks.stages.dns import MXSet
from checks.stages.endpoints import address_questions
from checks.stages.keys import MX_SET, STS
from checks.stages.policy import lookup_txts
from checks.stages.probe import Probe, ProbeContext


@dataclass(frozen=True)
class STSState:
    """The MTA-STS policy senders would apply (None: they would apply none)."""

    policy: mtasts.Policy | None = None

    def enforces(self, host: str) -> bool:
        """Whether senders require valid TLS to `host` (enforce mode, host covered)."""
        p = self.policy
        return (
            p is not None and p.mode == "enforce" and any(mtasts.mx_covered(m, host) for m in p.mx)
        )


def policy_url(domain: str) -> str:
    return f"https://mta-sts.{domain}/.well-known/mta-sts.txt"


async def probe_mtasts(ctx: ProbeContext) -> STSState:
    mxset: MXSet | None = ctx.result(MX_SET)
    if mxset is None:
        return STSState()
    domain = ctx.domain
    name = f"_mta-sts.{domain}"
    txts = await lookup_txts(ctx, name)
    if txts is None:
        return STSState()
    record_target, dig = Target(host=name), ctx.net.dig(name, "TXT")
    text, problems = mtasts.select(txts)
    if text is None:
        if problems:
            ctx.add(
                "mtasts.record.invalid", target=record_target, summary=problems[0], reproduce=dig
            )
        else:
            ctx.add(
                "mtasts.missing",
                target=Target(host=domain),
                summary=f"{domain} publishes no MTA-STS record ({name})",
                reproduce=dig,
            )
        return STSState()
    try:
        record = mtasts.parse_txt(text)
    except mtasts.MTASTSError as exc:
        ctx.add(
            "mtasts.record.invalid",
            target=record_target,
            summary=str(exc),
            evidence=[text],
            reproduce=dig,
        )
        return STSState()

    url = policy_url(domain)
    policy_target = Target(host=f"mta-sts.{domain}", port=443, protocol="https")
    curl = http.curl(ctx.net, url)

    def unreachable(
        why: str, evidence: list[str] | None = None, severity: Severity | None = None
    ) -> STSState:
        ctx.add(
            "mtasts.policy.unreachable",
            target=policy_target,
            summary=f"{url}: {why}",
            evidence=evidence or [f"_mta-sts record: {text}"],
            reproduce=curl,
            severity=severity,
        )
        return STSState()

    try:
        fetched = await http.fetch_reporting(ctx, url, max_bytes=mtasts.MAX_POLICY_BYTES)
    except TargetRefused as exc:
        return unreachable(str(exc))
    except DNSError as exc:
        return unreachable(f"mta-sts.{domain} does not resolve ({exc})")
    except ConnectionClosed as exc:  # a reset: busy as often as broken
        return unreachable(f"{exc} (busy? try again)", severity=Severity.INCONCLUSIVE)
    except NetError as exc:
        return unreachable(str(exc))
    if fetched.status != 200:
        why = f"HTTP {fetched.status} {fetched.reason}"
        if fetched.location:
            why += f", redirecting to {fetched.location[:120]} (senders never follow redirects)"
        return unreachable(why)
    try:
        policy = mtasts.parse_policy(fetched.text())
    except mtasts.MTASTSError as exc:
        ctx.add(
            "mtasts.policy.invalid",
            target=policy_target,
            summary=str(exc),
            evidence=fetched.text().splitlines()[:20],
            reproduce=curl,
        )
        return STSState()
    warnings = list(record.warnings + policy.warnings)
    if fetched.content_type != "text/plain":
        ctx.add(
            "mtasts.policy.invalid",
            target=policy_target,
            summary=f"served as {fetched.content_type or 'no Content-Type'}, not text/plain: "
            "strict senders discard it",
            reproduce=curl,
            severity=Severity.WARNING,
        )
    hosts = [mx.host for mx in mxset.hosts]
    if policy.mode != "none":
        for host in mtasts.uncovered(policy, hosts):
            ctx.add(
                "mtasts.mx.not_covered",
                target=Target(host=host),
                summary=f"MX {host} matches no mx: line of the policy "
                f"({', '.join(policy.mx)}); under mode {policy.mode} senders "
                + ("refuse to deliver to it" if policy.mode == "enforce" else "report it"),
                evidence=fetched.text().splitlines()[:20],
                reproduce=curl,
                severity=None if policy.mode == "enforce" else Severity.WARNING,
            )
    summary = (
        f"mode {policy.mode}, max_age {policy.max_age} s, mx {', '.join(policy.mx) or '(none)'}"
        f" (id {record.id})"
    )
    if policy.mode == "testing":
        ctx.add("mtasts.mode.testing", target=policy_target, summary=summary, reproduce=curl)
    elif policy.mode == "none":
        ctx.add(
            "mtasts.missing",
            target=Target(host=domain),
            summary=f"the MTA-STS policy is mode none: senders drop it ({summary})",
            reproduce=curl,
        )
    else:
        ctx.add(
            "mtasts.ok", target=policy_target, summary=summary, evidence=warnings, reproduce=curl
        )
    ctx.fact(
        "mtasts",
        {
            "id": record.id,
            "mode": policy.mode,
            "max_age": policy.max_age,
            "mx": list(policy.mx),
            "warnings": warnings,
        },
    )
    return STSState(policy)


PROBES: tuple[Probe, ...] = (
    Probe(
        STS.name,
        Stage.POLICY,
        probe_mtasts,
        needs=("dns.mx",),
        asks=lambda r, _c: [
            (f"_mta-sts.{r.domain}", "TXT"),
            *address_questions(f"mta-sts.{r.domain}"),
        ],
    ),
)
