"""IMAP (143 STARTTLS, 993) and POP3 (110 STLS, 995): where people read mail.

The checks an admin makes with `openssl s_client -starttls imap`: greeting,
CAPABILITY / CAPA, STARTTLS / STLS, and whether the server would take a
password before TLS (no LOGINDISABLED in IMAP, USER offered in POP3).
"""

from __future__ import annotations

from checks.core.model import Stage
from checks.protocols.mailbox import (
    IMAPDialect,
    POP3Dialect,
    imap_cleartext_login,
    pop3_cleartext_login,
)
from checks.protocols.session import Session
from checks.stages.endpoints import IMAP, POP3
from checks.stages.keys import IMAP_SESSIONS, POP3_SESSIONS
from checks.stages.probe import Probe, ProbeContext
from checks.stages.sessions import probe_service, reproduce

# -- judging and probes -------------------------------------------------------------------


JUDGE_CODES: dict[str, tuple[str, str, str]] = {  # family -> (no STARTTLS, login in clear, ok)
    "imap": ("imap.starttls.missing", "imap.auth.before_tls", "imap.ok"),
    "pop3": ("pop3.starttls.missing", "pop3.auth.before_tls", "pop3.ok"),
}


def judge_mailbox(ctx: ProbeContext, s: Session) -> None:
    ep = s.endpoint
    family = ep.family
    missing, in_clear, ok = JUDGE_CODES[family]
    target = ep.target()
    evidence = s.transcript[-20:]
    plain = reproduce(ep, tls=False)
    if ep.tls == "starttls":
        starttls = "STARTTLS" if family == "imap" else "STLS"
        if starttls not in s.capabilities:
            ctx.add(
                missing,
                target=target,
                summary=f"{ep.label()} does not offer {starttls}",
                evidence=evidence,
                reproduce=plain,
            )
        login = (imap_cleartext_login if family == "imap" else pop3_cleartext_login)(s.capabilities)
        if login:
            ctx.add(
                in_clear,
                target=target,
                summary=f"{ep.label()} accepts {', '.join(login)} before TLS: passwords "
                "can be sent in the clear",
                evidence=evidence,
                reproduce=plain,
            )
    if s.complete:
        tls = f"; {s.tls.version} {s.tls.cipher}" if s.tls else ""
        ctx.add(
            ok,
            target=target,
            summary=f"{ep.label()}: {s.banner}{tls}",
            evidence=s.transcript[-40:],
            reproduce=reproduce(ep, tls=s.tls is not None),
            data={"capabilities": list(s.tls_capabilities or s.capabilities)},
        )


async def probe_imap(ctx: ProbeContext) -> list[Session]:
    missing = ("imap.missing", "IMAP server")
    return await probe_service(ctx, IMAP, IMAPDialect, judge_mailbox, missing)


async def probe_pop3(ctx: ProbeContext) -> list[Session]:
    # POP3 is optional: its absence is no finding.
    return await probe_service(ctx, POP3, POP3Dialect, judge_mailbox, None)


PROBES: tuple[Probe, ...] = (
    Probe(IMAP_SESSIONS.name, Stage.CONNECT, probe_imap, needs=("dns.mx", "dns.srv")),
    Probe(POP3_SESSIONS.name, Stage.CONNECT, probe_pop3, needs=("dns.mx", "dns.srv")),
)
