"""Which sockets a mail admin would try, and how clients find them.

Port 25 of every MX address. For submission, IMAP and POP3: the RFC 6186 /
8314 SRV targets when the domain publishes them (a target of "." declares the
service absent); otherwise the names clients guess (`smtp.`, `imap.`,
`mail.`...). Failures at advertised endpoints are findings; a guessed name
that does not answer is only a guess that missed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from checks.core.errors import DNSError
from checks.protocols.session import Endpoint
from checks.stages.dns import MailHost, SRVTarget, capped_addresses
from checks.stages.probe import ProbeContext


@dataclass(frozen=True)
class ServiceSpec:
    service: str  # submission, imap, pop3
    srv: tuple[tuple[str, str, int, str], ...]  # (SRV name, protocol, default port, tls)
    guesses: tuple[str, ...]  # host prefixes; "" is the domain itself; "@mx" the primary MX


SUBMISSION = ServiceSpec(
    "submission",
    (
        ("_submission._tcp", "submission", 587, "starttls"),
        ("_submissions._tcp", "submissions", 465, "implicit"),
    ),
    ("@mx", "smtp", "mail"),
)
IMAP = ServiceSpec(
    "imap",
    (("_imap._tcp", "imap", 143, "starttls"), ("_imaps._tcp", "imaps", 993, "implicit")),
    ("imap", "mail", ""),
)
POP3 = ServiceSpec(
    "pop3",
    (("_pop3._tcp", "pop3", 110, "starttls"), ("_pop3s._tcp", "pop3s", 995, "implicit")),
    ("pop3", "pop", "mail"),
)


def address_questions(*names: str) -> list[tuple[str, str]]:
    """The A and AAAA questions for `names`, for a probe's `asks`."""
    return [(name, rdtype) for name in names for rdtype in ("A", "AAAA")]


def mx_endpoints(hosts: Sequence[MailHost]) -> list[Endpoint]:
    return [
        Endpoint(h.host, address, 25, "smtp", "starttls", "mx", True)
        for h in hosts
        for address in h.usable
    ]


@dataclass(frozen=True)
class Discovery:
    endpoints: tuple[Endpoint, ...]
    declared_absent: bool  # SRV records say the service is not offered
    advertised: bool  # endpoints come from SRV records


async def discover(
    ctx: ProbeContext,
    spec: ServiceSpec,
    srv: dict[str, tuple[SRVTarget, ...]],
    hosts: Sequence[MailHost] = (),
) -> Discovery:
    published = [
        (name, proto, tls, srv[name]) for name, proto, _port, tls in spec.srv if name in srv
    ]
    live = [(proto, tls, t) for _n, proto, tls, targets in published for t in targets if t.host]
    if published and not live:
        return Discovery((), declared_absent=True, advertised=True)
    if live:
        resolved = await asyncio.gather(*(_addresses(ctx, t.host) for _p, _t, t in live))
        endpoints = []
        for (proto, tls, target), addresses in zip(live, resolved, strict=True):
            role = "client"
            endpoints += [
                Endpoint(target.host, a, target.port, proto, tls, role, True) for a in addresses
            ]
        return Discovery(tuple(endpoints), declared_absent=False, advertised=True)

    names: list[str] = []
    for prefix in spec.guesses:
        if prefix == "@mx":
            if hosts:
                names.append(hosts[0].host)
        else:
            names.append(f"{prefix}.{ctx.domain}" if prefix else ctx.domain)
    names = list(dict.fromkeys(names))
    resolved = await asyncio.gather(*(_addresses(ctx, n) for n in names))
    seen: set[tuple[str, int]] = set()
    endpoints = []
    for name, addresses in zip(names, resolved, strict=True):
        for address in addresses:
            if ctx.net.policy.refusal(address) is not None:
                continue  # a guess pointing somewhere private is not ours to try
            for _n, proto, port, tls in spec.srv:
                if (address, port) not in seen:
                    seen.add((address, port))
                    endpoints.append(Endpoint(name, address, port, proto, tls, "client", False))
    return Discovery(tuple(endpoints), declared_absent=False, advertised=False)


async def _addresses(ctx: ProbeContext, name: str) -> list[str]:
    try:
        a, aaaa = await asyncio.gather(ctx.net.query(name, "A"), ctx.net.query(name, "AAAA"))
    except DNSError:
        return []
    return capped_addresses(ctx.net, name, a, aaaa)
