"""The autoconfig stage: what Thunderbird, Outlook and an iPhone would configure,
and whether that configuration works.

Discovery probes fetch what each client fetches, in the client's order, and
say which source wins (`autoconfig.thunderbird`, `autoconfig.outlook`,
`autoconfig.mailconf`, `autoconfig.mobileconfig`; SRV records come from the
DNS stage). `autoconfig.servers` then connects to every server any of them
would configure, exactly as configured (host, port, TLS mode), and says
whether it works, and if not, what does on that host. Every fetch and
connection goes through the network door.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

from checks.core.errors import (
    ConnectionClosed,
    ConnectTimeout,
    DNSError,
    NetError,
    ReadTimeout,
    TargetRefused,
)
from checks.core.model import Severity, Stage, Target
from checks.net import http
from checks.net.budget import spent
from checks.protocols.mailbox import IMAPDialect, POP3Dialect
from checks.protocols.session import DialectFactory, Endpoint, Session
from checks.protocols.smtp import SMTP
from checks.rules import apple, clientconf, outlook, thunderbird, tls
from checks.rules.clientconf import ClientConfig, ConfigError, ServerSetting
from checks.rules.dmarc import organizational_domain
from checks.stages.dns import MXSet, SRVTarget
from checks.stages.endpoints import address_questions
from checks.stages.keys import MAILCONF, MX_SET, SRV
from checks.stages.probe import Key, Probe, ProbeContext
from checks.stages.sessions import converse, reproduce, same_conversation
from checks.stages.tls import problems_of

DIALECTS: dict[str, DialectFactory] = {"smtp": SMTP, "imap": IMAPDialect, "pop3": POP3Dialect}
_LOCAL_PART = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}")
# What a client tries on a host, per protocol, best first (Thunderbird's order).
STANDARD: dict[str, tuple[tuple[int, str], ...]] = {
    "imap": ((993, "SSL"), (143, "STARTTLS")),
    "pop3": ((995, "SSL"), (110, "STARTTLS")),
    "smtp": ((465, "SSL"), (587, "STARTTLS")),
}
SRV_SETTINGS = {
    "_imaps._tcp": ("imap", "SSL"),
    "_imap._tcp": ("imap", "STARTTLS"),
    "_pop3s._tcp": ("pop3", "SSL"),
    "_pop3._tcp": ("pop3", "STARTTLS"),
    "_submissions._tcp": ("smtp", "SSL"),
    "_submission._tcp": ("smtp", "STARTTLS"),
}


def email_of(ctx: ProbeContext) -> str:
    """The address clients are set up for: the one typed, else user@domain."""
    original = ctx.request.original.strip()
    if "@" in original and "/" not in original:
        local = original.rsplit("@", 1)[0].strip()
        if _LOCAL_PART.fullmatch(local):
            return f"{local}@{ctx.domain}"
    return f"user@{ctx.domain}"


@dataclass(frozen=True)
class Found:
    """A configuration a client would use, and where it came from."""

    client: str  # thunderbird, outlook, srv, mailconf, mobileconfig
    source: str  # the URL (or record) it came from
    config: ClientConfig
    over_http: bool = False

    def describe(self) -> str:
        servers = [*self.config.incoming[:1], *self.config.outgoing[:1]]
        names = ", ".join(s.label() for s in servers)
        user = next((s.username for s in servers if s.username), "")
        return f"{names}" + (f" (username {user})" if user else "")


# -- fetching configuration documents -----------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """One fetch of one candidate source."""

    url: str
    found: Found | None = None
    problems: tuple[str, ...] = ()  # it answered 200 with something unusable
    missing: str = ""  # why it has nothing (404, refused, no such host)
    broken: bool = False  # the connection failed midway (reset, hang-up, timeout)


async def _get_config(
    ctx: ProbeContext, url: str, client: str, parse: Any, *, data: bytes | None = None
) -> Attempt:
    try:
        fetched = await http.fetch_reporting(ctx, url, max_bytes=clientconf.MAX_BYTES, data=data)
    except (DNSError, TargetRefused, NetError) as exc:
        broken = isinstance(exc, ConnectionClosed | ConnectTimeout | ReadTimeout)
        return Attempt(url, missing=str(exc), broken=broken)
    if fetched.status != 200:
        return Attempt(url, missing=f"HTTP {fetched.status} {fetched.reason}")
    try:
        config = parse(fetched.body)
    except ConfigError as exc:
        return Attempt(url, problems=exc.problems)
    return Attempt(url, Found(client, url, config, over_http=url.startswith("http:")))


def thunderbird_sources(ctx: ProbeContext, email: str) -> list[str]:
    """Thunderbird's lookups, highest priority first (REFERENCE: client autoconfiguration)."""
    d = ctx.domain
    query = f"?emailaddress={quote(email, safe='@')}"
    isp = [
        f"https://autoconfig.{d}/mail/config-v1.1.xml{query}",
        f"https://{d}/.well-known/autoconfig/mail/config-v1.1.xml",
        f"http://autoconfig.{d}/mail/config-v1.1.xml{query}",
        f"http://{d}/.well-known/autoconfig/mail/config-v1.1.xml",
    ]
    ispdb = ctx.net.config.ispdb_url
    sources = [*isp, *([f"{ispdb}{d}"] if ispdb else [])]
    mxset: MXSet | None = ctx.result(MX_SET)
    if mxset is not None and mxset.hosts and not mxset.implicit:
        base = organizational_domain(mxset.hosts[0].host)
        if base != organizational_domain(d):
            sources.append(f"https://autoconfig.{base}/mail/config-v1.1.xml{query}")
            if ispdb:
                sources.append(f"{ispdb}{base}")
    return sources


async def probe_thunderbird(ctx: ProbeContext) -> Found | None:
    if ctx.result(MX_SET) is None:
        return None
    email = email_of(ctx)
    sources = thunderbird_sources(ctx, email)
    attempts = await asyncio.gather(
        *(
            _get_config(ctx, url, "thunderbird", lambda b: thunderbird.parse_autoconfig(b, email))
            for url in sources
        )
    )
    target = Target(host=ctx.domain)
    for a in attempts:
        if a.problems:
            ctx.add(
                "autoconfig.invalid",
                target=Target(host=_host(a.url), protocol="https"),
                summary=f"{a.url}: " + "; ".join(a.problems),
                reproduce=http.curl(ctx.net, a.url),
            )
    winner = next((a.found for a in attempts if a.found is not None), None)
    tried = [f"{a.url}: {a.missing or 'invalid'}" for a in attempts if a.found is None]
    if winner is None:
        guess = await guess_config(ctx, email)
        if guess is None:
            summary = (
                "Thunderbird finds no configuration, and its guesses (imap., pop3., pop., "
                "mail., smtp. and the domain itself on the standard ports) find no working "
                "server with a valid certificate: users must type the settings"
            )
        else:
            summary = f"Thunderbird finds no configuration and guesses {guess.describe()}"
        ctx.add("autoconfig.missing", target=target, summary=summary, evidence=tried)
        ctx.fact("autoconfig", {"thunderbird": _fact(guess) if guess else None})
        return guess
    ctx.add(
        "autoconfig.found",
        target=target,
        summary=f"Thunderbird uses {winner.source}: {winner.describe()}",
        evidence=[s.label() for s in (*winner.config.incoming, *winner.config.outgoing)]
        + list(winner.config.warnings),
        reproduce=http.curl(ctx.net, winner.source),
    )
    # A source Thunderbird prefers broke off midway (a reset, a timeout): the
    # winner is this moment's, so whether it is "served only over http" is unknown.
    ahead = attempts[: next(i for i, a in enumerate(attempts) if a.found is winner)]
    for a in (a for a in ahead if a.broken):
        ctx.add(
            "autoconfig.fetch.failed",
            target=Target(host=_host(a.url), protocol="https"),
            summary=f"Thunderbird could not fetch {a.url} ({a.missing}), so it took "
            f"{winner.source}, which it ranks lower",
            reproduce=http.curl(ctx.net, a.url),
        )
    sure = not any(a.broken for a in ahead)
    report_insecure(ctx, winner, "autoconfig.insecure", plain_http=sure)
    ctx.fact("autoconfig", {"thunderbird": _fact(winner)})
    return winner


def report_insecure(ctx: ProbeContext, found: Found, code: str, *, plain_http: bool = True) -> None:
    """What in `found` exposes users (`plain_http`: judge that it came over http)."""
    target = Target(host=_host(found.source))
    if plain_http and found.over_http:
        ctx.add(
            code,
            target=target,
            summary=f"the configuration is served only over http ({found.source}): anyone "
            "on the path can point clients at their own server",
            reproduce=http.curl(ctx.net, found.source),
        )
    for setting in (*found.config.incoming, *found.config.outgoing):
        why = clientconf.insecure(setting)
        if why:
            ctx.add(
                code,
                target=Target(host=setting.hostname, port=setting.port),
                summary=f"{found.client}: {setting.label()}: {why}",
                reproduce=http.curl(ctx.net, found.source),
            )


async def guess_config(ctx: ProbeContext, email: str) -> Found | None:
    """Thunderbird's fallback: probe host names and ports, TLS first, IMAP
    before POP3; the first that works (with a valid certificate) wins."""
    d = ctx.domain
    incoming = [
        ServerSetting(protocol, f"{prefix}{d}", port, socket, email, ("password-cleartext",))
        for prefix, protocols in (
            ("imap.", ("imap",)),
            ("pop3.", ("pop3",)),
            ("pop.", ("pop3",)),
            ("mail.", ("imap", "pop3")),
            ("", ("imap", "pop3")),
        )
        for protocol in protocols
        for port, socket in STANDARD[protocol]
    ]
    outgoing = [
        ServerSetting("smtp", f"{prefix}{d}", port, socket, email, ("password-cleartext",))
        for prefix in ("smtp.", "mail.", "")
        for port, socket in (*STANDARD["smtp"], (25, "STARTTLS"))
    ]
    checks_in, checks_out = await asyncio.gather(
        asyncio.gather(*(verify(ctx, s) for s in incoming)),
        asyncio.gather(*(verify(ctx, s) for s in outgoing)),
    )
    got_in = next((c.setting for c in checks_in if c.works), None)
    got_out = next((c.setting for c in checks_out if c.works), None)
    if got_in is None or got_out is None:
        return None
    return Found("thunderbird", "guess", ClientConfig((got_in,), (got_out,)))


def _host(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0].split(":")[0]


def _fact(found: Found | None) -> dict[str, Any] | None:
    if found is None:
        return None
    return {
        "source": found.source,
        "incoming": [s.label() for s in found.config.incoming],
        "outgoing": [s.label() for s in found.config.outgoing],
    }


# -- Outlook ---------------------------------------------------------------------------


async def probe_outlook(ctx: ProbeContext) -> Found | None:
    """POX autodiscover in Outlook's order; redirects followed at most twice
    (Outlook's habit, and the budget MAILCHECK_MAX_REDIRECTS)."""
    if ctx.result(MX_SET) is None:
        return None
    email = email_of(ctx)
    target = Target(host=ctx.domain)
    hops: list[str] = []
    max_hops = ctx.net.config.budgets.redirects
    for _ in range(max_hops + 1):
        outcome = await _first_autodiscover(ctx, email)
        if isinstance(outcome, Found):
            ctx.add(
                "autodiscover.found",
                target=target,
                summary=f"Outlook uses {outcome.source}: {outcome.describe()}"
                + (f" (after {' -> '.join(hops)})" if hops else ""),
                evidence=[s.label() for s in (*outcome.config.incoming, *outcome.config.outgoing)],
            )
            report_insecure(ctx, outcome, "autoconfig.insecure")
            ctx.fact("autodiscover", _fact(outcome))
            return outcome
        if isinstance(outcome, _Redirect):
            if outcome.url is not None:
                followed = await _follow_url(ctx, outcome, email, hops)
                if followed is not None:
                    return followed
                return None
            address = outcome.address or ""
            if address in hops or address == email or len(hops) >= max_hops:
                ctx.add(
                    "autodiscover.redirect.refused",
                    target=target,
                    summary=f"{outcome.origin} redirects to {address}: "
                    + ("a loop" if address in hops or address == email else _too_many(ctx)),
                )
                return None
            hops.append(address)
            email = address
            continue
        ctx.add(
            "autodiscover.missing",
            target=target,
            summary="Outlook finds no autodiscover response for "
            f"{email} (POST to the domain and to autodiscover.{ctx.domain}, http redirect, "
            "SRV)",
            evidence=outcome,
        )
        return None
    return None


def _too_many(ctx: ProbeContext) -> str:
    return f"not followed: {spent('redirects', ctx.net.config.budgets)} was reached"


@dataclass(frozen=True)
class _Redirect:
    origin: str
    address: str | None = None
    url: str | None = None


def _autodiscover_fixed(domain: str) -> list[str]:
    """Outlook's first two tries: POST to the domain, then to autodiscover.<domain>."""
    return [
        f"https://{domain}/autodiscover/autodiscover.xml",
        f"https://autodiscover.{domain}/autodiscover/autodiscover.xml",
    ]


async def _autodiscover_more(ctx: ProbeContext, domain: str) -> list[str]:
    """Outlook's later tries: where a GET over http redirects to (https
    only), then the _autodiscover._tcp SRV targets, asked at once."""

    async def redirected() -> list[str]:
        probe_url = f"http://autodiscover.{domain}/autodiscover/autodiscover.xml"
        try:
            got = await http.fetch_reporting(ctx, probe_url, max_bytes=clientconf.MAX_BYTES)
        except (DNSError, TargetRefused, NetError):
            return []
        moved = got.location if got.status in (301, 302, 303, 307, 308) else None
        return [moved] if moved and moved.startswith("https://") else []

    async def srv() -> list[str]:
        try:
            answer = await ctx.net.query(f"_autodiscover._tcp.{domain}", "SRV")
        except DNSError:
            return []
        urls = []
        for r in sorted(answer.records, key=lambda r: (r.priority, -r.weight)):
            host = r.target.to_text().rstrip(".")
            if host:
                port = "" if r.port == 443 else f":{r.port}"
                urls.append(f"https://{host}{port}/autodiscover/autodiscover.xml")
        return urls

    moved, targets = await asyncio.gather(redirected(), srv())
    return [*moved, *targets]


async def _first_autodiscover(ctx: ProbeContext, email: str) -> Found | _Redirect | list[str]:
    """Every candidate asked at once (the fixed URLs while the redirect probe
    and the SRV lookup run); the first in Outlook's order that answers
    usefully wins. Else why none did."""
    domain = email.rsplit("@", 1)[1]
    body = outlook.autodiscover_request(email)
    fixed = _autodiscover_fixed(domain)
    posts = [asyncio.ensure_future(_post(ctx, url, body, email)) for url in fixed]
    try:
        more = [u for u in dict.fromkeys(await _autodiscover_more(ctx, domain)) if u not in fixed]
        posts += [asyncio.ensure_future(_post(ctx, url, body, email)) for url in more]
        results = await asyncio.gather(*posts)
    finally:
        for post in posts:
            post.cancel()
    misses: list[str] = []
    for url, result in zip([*fixed, *more], results, strict=True):
        if isinstance(result, (Found, _Redirect)):
            return result
        misses.append(f"{url}: {result}")
    return misses


async def _post(ctx: ProbeContext, url: str, body: bytes, email: str) -> Found | _Redirect | str:
    try:
        fetched = await http.fetch_reporting(ctx, url, max_bytes=clientconf.MAX_BYTES, data=body)
    except (DNSError, TargetRefused, NetError) as exc:
        return str(exc)
    if fetched.status != 200:
        return f"HTTP {fetched.status} {fetched.reason}"
    try:
        answer = outlook.parse_autodiscover(fetched.body, email)
        problem = f"answers with an error: {answer.error}" if answer.error else None
    except ConfigError as exc:
        problem = str(exc)
    if problem is not None:
        ctx.add(
            "autodiscover.invalid",
            target=Target(host=_host(url), protocol="https"),
            summary=f"{url}: {problem}",
            reproduce=_curl_post(ctx, url, email),
        )
        return "invalid"
    if answer.redirect_addr or answer.redirect_url:
        return _Redirect(url, answer.redirect_addr, answer.redirect_url)
    if answer.config is None:
        return "no settings"
    return Found("outlook", url, answer.config)


async def _follow_url(
    ctx: ProbeContext, redirect: _Redirect, email: str, hops: list[str]
) -> Found | None:
    """Follow RedirectUrl hops (https only, policy-checked, no loops)."""
    seen = {redirect.origin}
    current = redirect
    body = outlook.autodiscover_request(email)
    for _ in range(ctx.net.config.budgets.redirects):
        url = current.url or ""
        why = ""
        if not url.startswith("https://"):
            why = "not https"
        elif url in seen:
            why = "a loop"
        if why:
            break
        seen.add(url)
        hops.append(url)
        result = await _post(ctx, url, body, email)
        if isinstance(result, Found):
            ctx.add(
                "autodiscover.found",
                target=Target(host=ctx.domain),
                summary=f"Outlook uses {url}: {result.describe()} (after "
                f"{' -> '.join([redirect.origin, *hops[:-1]])})",
                evidence=[s.label() for s in (*result.config.incoming, *result.config.outgoing)],
            )
            report_insecure(ctx, result, "autoconfig.insecure")
            ctx.fact("autodiscover", _fact(result))
            return result
        if isinstance(result, _Redirect):
            current = result
            continue
        why = result
        break
    else:
        why = _too_many(ctx)
    ctx.add(
        "autodiscover.redirect.refused",
        target=Target(host=_host(current.origin)),
        summary=f"{current.origin} redirects to {current.url}: {why}",
        evidence=hops,
    )
    return None


def _curl_post(ctx: ProbeContext, url: str, email: str) -> str:
    body = outlook.autodiscover_request(email).decode()
    ca = f" --cacert {ctx.net.config.ca_file}" if ctx.net.config.ca_file else ""
    return f"curl -sS{ca} -H 'Content-Type: text/xml' --data '{body}' '{url}'"


def _verify_command(ctx: ProbeContext, url: str) -> str:
    """OpenSSL's own verdict on a signed profile; `-purpose any` because a
    profile signer is no S/MIME (e-mail protection) certificate."""
    ca = f" -CAfile {ctx.net.config.ca_file}" if ctx.net.config.ca_file else ""
    return f"curl -sS '{url}' | openssl cms -verify -inform DER -purpose any{ca} -out /dev/null"


# -- mailconf= and Apple profiles ---------------------------------------------------------


async def probe_mailconf(ctx: ProbeContext) -> Found | None:
    url: str | None = ctx.result(MAILCONF)
    if url is None:
        return None
    email = email_of(ctx)
    attempt = await _get_config(
        ctx, url, "mailconf", lambda b: thunderbird.parse_autoconfig(b, email)
    )
    if attempt.found is not None:
        return attempt.found
    ctx.add(
        "autoconfig.fetch.failed" if attempt.broken else "autoconfig.invalid",
        target=Target(host=_host(url), protocol="https"),
        summary=f"the mailconf= record points at {url}: "
        + ("; ".join(attempt.problems) or attempt.missing),
        reproduce=http.curl(ctx.net, url),
    )
    return None


async def probe_mobileconfig(ctx: ProbeContext) -> Found | None:
    url = ctx.request.mobileconfig_url
    if not url:
        return None
    email = email_of(ctx)
    target = Target(host=_host(url), protocol="https")

    def invalid(why: str) -> None:
        ctx.add(
            "mobileconfig.invalid",
            target=target,
            summary=f"{url}: {why}",
            reproduce=http.curl(ctx.net, url),
        )

    try:
        fetched = await http.fetch_reporting(
            ctx,
            url,
            max_bytes=clientconf.MAX_BYTES,
            redirects=ctx.net.config.budgets.redirects,  # MAILCHECK_MAX_REDIRECTS
        )
    except (DNSError, TargetRefused, NetError) as exc:
        invalid(str(exc))
        return None
    if fetched.status != 200:
        invalid(f"HTTP {fetched.status} {fetched.reason}")
        return None
    try:
        profile = apple.parse_mobileconfig(fetched.body, email, ca_file=ctx.net.config.ca_file)
    except ConfigError as exc:
        invalid(str(exc))
        return None
    # "signed by X" only when verified: a copied certificate proves nothing.
    signed = "unsigned"
    if profile.signer:
        signed = f"signed by {profile.signer}"
    elif profile.signed:
        signed = "signed, but the signature does not verify"
        ctx.add(
            "mobileconfig.signature.unverified",
            target=target,
            summary=f"{url}: {profile.unverified}",
            reproduce=_verify_command(ctx, url),
        )
    ctx.add(
        "mobileconfig.ok",
        target=target,
        summary=f"profile {profile.identifier} ({signed}): "
        f"{Found('mobileconfig', url, profile.config).describe()}",
        evidence=list(profile.warnings),
        reproduce=http.curl(ctx.net, url),
    )
    found = Found("mobileconfig", url, profile.config, over_http=url.startswith("http:"))
    report_insecure(ctx, found, "autoconfig.insecure")
    return found


def srv_configs(ctx: ProbeContext) -> list[Found]:
    srv: dict[str, tuple[SRVTarget, ...]] | None = ctx.result(SRV)
    found = []
    for service, targets in (srv or {}).items():
        if service not in SRV_SETTINGS:
            continue
        protocol, socket = SRV_SETTINGS[service]
        for t in targets:
            if t.host:
                setting = ServerSetting(protocol, t.host, t.port, socket, "", ())
                record = f"{service}.{ctx.domain} SRV {t.priority} {t.weight} {t.port} {t.host}"
                config = (
                    ClientConfig((), (setting,))
                    if protocol == "smtp"
                    else ClientConfig((setting,), ())
                )
                found.append(Found("srv", record, config))
    return found


# -- the cross-check ---------------------------------------------------------------------


@dataclass(frozen=True)
class Verified:
    setting: ServerSetting
    status: str  # works | unreachable | mismatch | busy (turned us away: says nothing)
    reason: str = ""
    detail: str = ""  # what worked: TLS version, server name

    @property
    def works(self) -> bool:
        return self.status == "works"


async def verify(ctx: ProbeContext, setting: ServerSetting) -> Verified:
    """Connect exactly as `setting` says (memoised per check: many sources name
    the same server)."""
    memo: dict[tuple[str, str, int, str], asyncio.Future[Verified]]
    memo = ctx.net.memo.setdefault("autoconfig.verify", {})
    key = (setting.protocol, setting.hostname, setting.port, setting.socket)
    task = memo.get(key)
    if task is None:
        task = asyncio.ensure_future(_verify(ctx, setting))
        memo[key] = task
    return await asyncio.shield(task)


def endpoint_for(setting: ServerSetting, address: str) -> Endpoint:
    secure = setting.socket == "SSL"
    protocol = {
        "imap": "imaps" if secure else "imap",
        "pop3": "pop3s" if secure else "pop3",
        "smtp": "submissions" if secure else "submission",
    }[setting.protocol]
    mode = {"SSL": "implicit", "STARTTLS": "starttls"}.get(setting.socket, "plain")
    return Endpoint(setting.hostname, address, setting.port, protocol, mode, "client", True)


async def _verify(ctx: ProbeContext, setting: ServerSetting) -> Verified:
    try:
        addresses = await http.resolve_allowed(ctx.net, setting.hostname)
    except DNSError as exc:
        return Verified(setting, "unreachable", f"{setting.hostname} does not resolve ({exc})")
    except TargetRefused as exc:
        return Verified(setting, "unreachable", str(exc))
    if not addresses:
        return Verified(setting, "unreachable", f"{setting.hostname} has no usable address")
    ep = endpoint_for(setting, addresses[0])
    # The connect stage may be talking to this very endpoint: its conversation
    # answers the question, and a second one would queue behind it anyway.
    earlier = await same_conversation(ctx.net, ep)
    if earlier is not None and earlier.complete:
        return judge_session(ctx, setting, earlier)
    scratch = ProbeContext(ctx.request, ctx.net, {})  # converse's findings are ours to judge
    try:
        session = await converse(scratch, ep, DIALECTS[setting.protocol](ctx.net.config))
    except TargetRefused as exc:  # the check's connection budget is spent
        return Verified(setting, "unreachable", str(exc))
    failure = next(iter(scratch.findings), None)
    if session is None or not session.complete:
        reason = failure.summary if failure else f"{ep.label()}: the conversation failed"
        if failure is not None and failure.severity is Severity.INCONCLUSIVE:
            # A 421, a full queue, a hang-up: the server was busy, and what it
            # would say when it is not is unknown. Never a mismatch.
            return Verified(setting, "busy", reason)
        dead = failure is not None and failure.code.endswith(
            (".connect.refused", ".connect.timeout")
        )
        return Verified(setting, "unreachable" if dead else "mismatch", reason)
    return judge_session(ctx, setting, session)


def judge_session(ctx: ProbeContext, setting: ServerSetting, session: Session) -> Verified:
    """A complete conversation, held against what the setting promised."""
    ep = session.endpoint
    if setting.socket == "STARTTLS" and session.tls is None:
        return Verified(setting, "mismatch", f"{ep.label()} does not offer STARTTLS")
    if session.tls is None:
        return Verified(setting, "works", detail="no TLS")
    chain = [tls.parse_cert(d) for d in session.tls.chain_der]
    bad = [
        p
        for p in problems_of(session, chain, ctx.net.config.ca_file, tls.now_utc())
        if p.code.startswith("tls.cert.") and p.code != "tls.cert.expiring"
    ]
    if bad:
        why = f"{ep.label()}: clients refuse the certificate: {bad[0].summary}"
        return Verified(setting, "mismatch", why)
    return Verified(setting, "works", detail=session.tls.version)


async def alternative(ctx: ProbeContext, setting: ServerSetting) -> Verified | None:
    """The first standard port and TLS mode that works on the same host."""
    others = [
        replace(setting, port=port, socket=socket)
        for port, socket in STANDARD[setting.protocol]
        if (port, socket) != (setting.port, setting.socket)
    ]
    results = await asyncio.gather(*(verify(ctx, s) for s in others))
    return next((r for r in results if r.works), None)


_AUTOCONFIG_FAILURES = {
    "unreachable": "autoconfig.server.unreachable",
    "mismatch": "autoconfig.server.mismatch",
}
_FAILURE_CODES = {
    "thunderbird": _AUTOCONFIG_FAILURES,
    "mailconf": _AUTOCONFIG_FAILURES,
    "mobileconfig": _AUTOCONFIG_FAILURES,
    "outlook": {
        "unreachable": "autodiscover.server.unreachable",
        "mismatch": "autodiscover.server.mismatch",
    },
    "srv": {"unreachable": "srv.server.unreachable", "mismatch": "srv.server.mismatch"},
}
_WHO = {
    "thunderbird": "Thunderbird's configuration",
    "mailconf": "the mailconf= document",
    "mobileconfig": "the Apple profile",
    "outlook": "Outlook's autodiscover",
    "srv": "the SRV record",
}


async def probe_servers(ctx: ProbeContext) -> None:
    sources: list[Found] = [
        f
        for f in (
            ctx.result(THUNDERBIRD),
            ctx.result(OUTLOOK),
            ctx.result(MAILCONF_CONFIG),
            ctx.result(MOBILECONFIG),
        )
        if f is not None and f.source != "guess"
    ]
    sources += srv_configs(ctx)
    pairs = [(f, s) for f in sources for s in (*f.config.incoming, *f.config.outgoing)]
    results = await asyncio.gather(*(verify(ctx, s) for _, s in pairs))
    working: dict[ServerSetting, list[str]] = {}
    for (found, setting), result in zip(pairs, results, strict=True):
        key = replace(setting, username="", auth=())
        if result.works:
            working.setdefault(key, []).append(found.client)
            continue
        if result.status == "busy":
            ctx.add(
                "autoconfig.server.busy",
                target=Target(host=setting.hostname, port=setting.port),
                summary=f"{_WHO[found.client]} says {setting.label()}: {result.reason}",
                evidence=[found.source],
                reproduce=reproduce(endpoint_for(setting, setting.hostname)),
            )
            continue
        better = await alternative(ctx, setting)
        instead = (
            f"; {better.setting.port} with {better.setting.socket} works"
            if better is not None
            else ""
        )
        ctx.add(
            _FAILURE_CODES[found.client][result.status],
            target=Target(host=setting.hostname, port=setting.port),
            summary=f"{_WHO[found.client]} says {setting.label()}: {result.reason}{instead}",
            evidence=[found.source],
            reproduce=reproduce(endpoint_for(setting, setting.hostname)),
        )
    for setting, clients in working.items():
        result = await verify(ctx, setting)
        ctx.add(
            "autoconfig.server.ok",
            target=Target(host=setting.hostname, port=setting.port),
            summary=f"{setting.label()} works ({result.detail}): configured by "
            + ", ".join(dict.fromkeys(clients)),
            reproduce=reproduce(endpoint_for(setting, setting.hostname)),
        )


# What this module's probes return, by name (checks.stages.probe.Key).
THUNDERBIRD: Key[Found | None] = Key("autoconfig.thunderbird")
OUTLOOK: Key[Found | None] = Key("autoconfig.outlook")
MOBILECONFIG: Key[Found | None] = Key("autoconfig.mobileconfig")
MAILCONF_CONFIG: Key[Found | None] = Key("autoconfig.mailconf")


PROBES: tuple[Probe, ...] = (
    Probe(
        THUNDERBIRD.name,
        Stage.AUTOCONFIG,
        probe_thunderbird,
        needs=("dns.mx",),
        asks=lambda r, _c: address_questions(f"autoconfig.{r.domain}", r.domain),
    ),
    Probe(
        OUTLOOK.name,
        Stage.AUTOCONFIG,
        probe_outlook,
        needs=("dns.mx",),
        asks=lambda r, _c: [
            *address_questions(f"autodiscover.{r.domain}", r.domain),
            (f"_autodiscover._tcp.{r.domain}", "SRV"),
        ],
    ),
    Probe(MAILCONF_CONFIG.name, Stage.AUTOCONFIG, probe_mailconf, needs=("dns.mailconf",)),
    Probe(MOBILECONFIG.name, Stage.AUTOCONFIG, probe_mobileconfig),
    Probe(
        "autoconfig.servers",
        Stage.AUTOCONFIG,
        probe_servers,
        needs=(
            "autoconfig.thunderbird",
            "autoconfig.outlook",
            "autoconfig.mailconf",
            "autoconfig.mobileconfig",
            "dns.srv",
        ),
    ),
)
