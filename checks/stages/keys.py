"""What the probes other stages read return, by probe name: `ctx.result(MX_SET)`
is an `MXSet | None` to mypy where `ctx.result("dns.mx")` was Any. Kept apart
from the stage modules so that reading a key imports no stage (a DNS-only
check must not load the policy stage to learn the name of its DKIM probe);
the types are imported for the type checker only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from checks.stages.probe import Key

if TYPE_CHECKING:
    from checks.protocols.session import Session
    from checks.stages.auth import Logins
    from checks.stages.consistency import Nameservers
    from checks.stages.dane import DaneHosts
    from checks.stages.dns import MailHost, MXSet, SRVTarget
    from checks.stages.mtasts import STSState

MX_SET: Key[MXSet | None] = Key("dns.mx")
MX_HOSTS: Key[tuple[MailHost, ...]] = Key("dns.mx.hosts")
SRV: Key[dict[str, tuple[SRVTarget, ...]]] = Key("dns.srv")
PTR: Key[dict[str, list[str]]] = Key("dns.ptr")
MAILCONF: Key[str | None] = Key("dns.mailconf")
NAMESERVERS: Key[Nameservers | None] = Key("dns.nameservers")
MX_SESSIONS: Key[list[Session]] = Key("connect.smtp")
SUBMISSION_SESSIONS: Key[list[Session]] = Key("connect.submission")
IMAP_SESSIONS: Key[list[Session]] = Key("connect.imap")
POP3_SESSIONS: Key[list[Session]] = Key("connect.pop3")
STS: Key[STSState] = Key("policy.mtasts")
TLSA: Key[DaneHosts] = Key("policy.tlsa")
DKIM_KEYS: Key[list[str]] = Key("policy.dkim")
LOGIN: Key[Logins] = Key("auth.login")
