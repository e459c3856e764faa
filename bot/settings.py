"""Every setting, read in one place from the environment (and CLI flags).

Nothing reads the environment at import time: `Settings.from_env()` is called
by the entry point, which passes the result down. `.env.example` documents
each variable (a test keeps the two in step). Secrets are kept out of `repr`,
so a logged Settings shows no token.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from checks.core.accounts import Accounts
from checks.core.config import Budgets, EngineConfig, Nameserver, Timeouts
from checks.core.errors import InputError
from checks.core.names import normalize_domain
from checks.core.targets import TargetPolicy, parse_address, parse_networks
from checks.net.budget import BUDGETS

_SLACK_ID = re.compile(r"^[A-Z0-9]{2,32}$")


# -- reading one variable: (its text, its name) -> the value ---------------------------


def _text(text: str, name: str) -> str:
    return text


def _lower(text: str, name: str) -> str:
    return text.lower()


def _path(text: str, name: str) -> str | None:
    return text or None


def _seconds(text: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InputError(f"{name}={text!r} is not a number of seconds") from None


def _whole(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InputError(f"{name}={text!r} is not a whole number") from None


def _list(text: str, name: str) -> tuple[str, ...]:
    return tuple(_items(text))


def _ids(text: str, name: str) -> frozenset[str]:
    return frozenset(_items(text))


def _resolvers(text: str, name: str) -> tuple[Nameserver, ...]:
    return parse_resolvers([text])


def _zones(text: str, name: str) -> tuple[str, ...] | None:
    """Empty: the built-in list; "none": no blocklist checks; else the zones given."""
    if not text:
        return None
    if text.lower() == "none":
        return ()
    return tuple(normalize_domain(z).ascii for z in _items(text))


def _env(name: str, default: Any, read: Callable[[str, str], Any], *, secret: bool = False) -> Any:
    """A setting: its field's default is the one default, `name` the variable
    that sets it, `read` how its text becomes the value."""
    return field(default=default, repr=not secret, metadata={"env": name, "read": read})


@dataclass(frozen=True)
class Settings:
    # -- the engine ------------------------------------------------------------
    resolvers: tuple[Nameserver, ...] = _env("MAILCHECK_RESOLVER", (), _resolvers)
    allow_targets: tuple[str, ...] = _env("MAILCHECK_ALLOW_TARGETS", (), _list)
    ca_file: str | None = _env("MAILCHECK_CA_FILE", None, _path)
    timeout: float = _env("MAILCHECK_TIMEOUT", 120.0, _seconds)
    dns_timeout: float = _env("MAILCHECK_DNS_TIMEOUT", 5.0, _seconds)
    connect_timeout: float = _env("MAILCHECK_CONNECT_TIMEOUT", 10.0, _seconds)
    banner_timeout: float = _env("MAILCHECK_BANNER_TIMEOUT", 30.0, _seconds)
    reply_timeout: float = _env("MAILCHECK_REPLY_TIMEOUT", 30.0, _seconds)
    helo_name: str = _env("MAILCHECK_HELO_NAME", "mailcheck.invalid", _text)
    # None: the built-in list; (): none
    dnsbl_zones: tuple[str, ...] | None = _env("MAILCHECK_DNSBL_ZONES", None, _zones)
    # None: the IANA root anchors
    trust_anchor_file: str | None = _env("MAILCHECK_TRUST_ANCHORS", None, _path)
    # "": skip the ISPDB
    ispdb_url: str = _env("MAILCHECK_ISPDB_URL", "https://autoconfig.thunderbird.net/v1.1/", _text)
    # test accounts (secrets): MAILCHECK_ACCOUNTS_FILE, then MAILCHECK_ACCOUNT_<NAME>_*
    accounts: Accounts = field(default_factory=Accounts, repr=False)
    delivery_timeout: float = _env("MAILCHECK_DELIVERY_TIMEOUT", 120.0, _seconds)
    delivery_slow: float = _env("MAILCHECK_DELIVERY_SLOW", 30.0, _seconds)
    # what one check may do at most: one variable per budget (checks.net.budget.BUDGETS)
    budgets: Budgets = field(default_factory=Budgets)
    # -- Slack -------------------------------------------------------------------
    slack_bot_token: str = _env("SLACK_BOT_TOKEN", "", _text, secret=True)
    slack_app_token: str = _env("SLACK_APP_TOKEN", "", _text, secret=True)
    slack_signing_secret: str = _env("SLACK_SIGNING_SECRET", "", _text, secret=True)
    slack_api_url: str = _env("SLACK_API_URL", "https://slack.com/api/", _text)
    slack_mode: str = _env("MAILCHECK_SLACK_MODE", "socket", _lower)  # or "http"
    # thread replies of one report, its summary included
    slack_max_replies: int = _env("MAILCHECK_SLACK_MAX_REPLIES", 20, _whole)
    # a check done this soon posts its whole thread at once
    slack_grace: float = _env("MAILCHECK_SLACK_GRACE", 1.5, _seconds)
    http_host: str = _env("MAILCHECK_HTTP_HOST", "127.0.0.1", _text)
    http_port: int = _env("MAILCHECK_HTTP_PORT", 3000, _whole)
    # -- queue and workers ---------------------------------------------------------
    # may hold a password
    redis_url: str = _env("MAILCHECK_REDIS_URL", "redis://127.0.0.1:6379/0", _text, secret=True)
    worker_concurrency: int = _env("MAILCHECK_WORKER_CONCURRENCY", 4, _whole)
    # threads one worker posts at once (paced per channel)
    post_concurrency: int = _env("MAILCHECK_POST_CONCURRENCY", 64, _whole)
    job_retries: int = _env("MAILCHECK_JOB_RETRIES", 3, _whole)
    job_heartbeat: int = _env("MAILCHECK_JOB_HEARTBEAT", 30, _whole)
    sweep_interval: int = _env("MAILCHECK_SWEEP_INTERVAL", 10, _whole)
    # -- who may ask, how often -------------------------------------------------------
    # empty: every channel, everyone
    allowed_channels: frozenset[str] = _env("MAILCHECK_ALLOWED_CHANNELS", frozenset(), _ids)
    allowed_users: frozenset[str] = _env("MAILCHECK_ALLOWED_USERS", frozenset(), _ids)
    # may stop or replace anyone's watch
    admin_users: frozenset[str] = _env("MAILCHECK_ADMIN_USERS", frozenset(), _ids)
    user_rate: int = _env("MAILCHECK_USER_RATE", 20, _whole)  # checks per user per hour
    domain_rate: int = _env("MAILCHECK_DOMAIN_RATE", 30, _whole)  # checks of one domain per hour
    # stored reports and the history of runs
    retention_days: int = _env("MAILCHECK_RETENTION_DAYS", 90, _whole)
    # -- watches -----------------------------------------------------------------------
    # how often each worker looks for due watches
    watch_tick: float = _env("MAILCHECK_WATCH_TICK", 30.0, _seconds)
    # the shortest every= allowed (seconds)
    watch_min_interval: int = _env("MAILCHECK_WATCH_MIN_INTERVAL", 900, _whole)
    max_watches: int = _env("MAILCHECK_MAX_WATCHES", 20, _whole)  # per channel
    # -- the send test and its receiver ----------------------------------------------
    # where test addresses live; "": no send tests
    sendtest_domain: str = _env("MAILCHECK_SENDTEST_DOMAIN", "", _text)
    # seconds a test address takes its message
    sendtest_ttl: int = _env("MAILCHECK_SENDTEST_TTL", 1800, _whole)
    receiver_listen: str = _env("MAILCHECK_RECEIVER_LISTEN", "0.0.0.0:25", _text)
    # the greeting's name; "": the send-test domain
    receiver_hostname: str = _env("MAILCHECK_RECEIVER_HOSTNAME", "", _text)
    receiver_tls_cert: str = _env("MAILCHECK_RECEIVER_TLS_CERT", "", _text)
    receiver_tls_key: str = _env("MAILCHECK_RECEIVER_TLS_KEY", "", _text)
    receiver_max_size: int = _env("MAILCHECK_RECEIVER_MAX_SIZE", 10 * 1024 * 1024, _whole)
    # per source network at once
    receiver_max_connections: int = _env("MAILCHECK_RECEIVER_MAX_CONNECTIONS", 5, _whole)
    # connections per source network per hour (0: no limit)
    receiver_rate: int = _env("MAILCHECK_RECEIVER_RATE", 60, _whole)
    # from all sources at once
    receiver_total_connections: int = _env("MAILCHECK_RECEIVER_TOTAL_CONNECTIONS", 20, _whole)
    receiver_max_commands: int = _env("MAILCHECK_RECEIVER_MAX_COMMANDS", 100, _whole)  # per session
    # RCPTs per message (each may be a Redis lookup)
    receiver_max_recipients: int = _env("MAILCHECK_RECEIVER_MAX_RECIPIENTS", 5, _whole)
    # a source network: the sender's /24, or /64
    receiver_prefix_v4: int = _env("MAILCHECK_RECEIVER_PREFIX_V4", 24, _whole)
    receiver_prefix_v6: int = _env("MAILCHECK_RECEIVER_PREFIX_V6", 64, _whole)
    # the variables that were set, not defaulted (the CLI's history needs an explicit Redis)
    given: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f.metadata.get("env")
            if name is not None and name in env:
                values[f.name] = f.metadata["read"](env[name].strip(), name)
        values["accounts"] = _accounts(env.get(ACCOUNTS_FILE, "").strip(), env)
        values["budgets"] = Budgets(
            **{
                budget: _whole(env[spec.setting].strip(), spec.setting)
                for budget, spec in BUDGETS.items()
                if spec.setting in env
            }
        )
        return cls(**values, given=frozenset(n for n in DEFAULTS if n in env)).validated()

    def override(self, **changes: Any) -> Settings:
        """These settings with the non-None `changes` applied (CLI flags win over env)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None}).validated()

    def validated(self) -> Settings:
        parse_networks(self.allow_targets)  # raises InputError naming the bad value
        for what, value in (
            ("timeout", self.timeout),
            ("DNS timeout", self.dns_timeout),
            ("connect timeout", self.connect_timeout),
            ("banner timeout", self.banner_timeout),
            ("reply timeout", self.reply_timeout),
            ("delivery timeout", self.delivery_timeout),
            ("slow-delivery threshold", self.delivery_slow),
        ):
            if not 0 < value <= 3600:
                raise InputError(f"the {what} must be between 0 and 3600 seconds, not {value:g}")
        try:
            normalize_domain(self.helo_name)
        except InputError as exc:
            raise InputError(f"MAILCHECK_HELO_NAME: {exc}") from None
        if self.ca_file and not os.path.isfile(self.ca_file):
            raise InputError(f"CA file {self.ca_file!r} does not exist")
        if self.ispdb_url and not (
            self.ispdb_url.startswith(("https://", "http://")) and self.ispdb_url.endswith("/")
        ):
            raise InputError(
                "MAILCHECK_ISPDB_URL must be an http(s) URL ending with '/' "
                "(the domain is appended), or empty to skip the ISPDB"
            )
        if self.trust_anchor_file:
            self.trust_anchors()  # raises InputError naming the file and the bad line
        if self.slack_mode not in ("socket", "http"):
            raise InputError(
                f"MAILCHECK_SLACK_MODE must be socket or http, not {self.slack_mode!r}"
            )
        if not self.slack_api_url.endswith("/"):
            raise InputError("SLACK_API_URL must end with '/' (e.g. https://slack.com/api/)")
        for name, ids in (
            ("MAILCHECK_ALLOWED_CHANNELS", self.allowed_channels),
            ("MAILCHECK_ALLOWED_USERS", self.allowed_users),
            ("MAILCHECK_ADMIN_USERS", self.admin_users),
        ):
            bad = sorted(i for i in ids if not _SLACK_ID.match(i))
            if bad:
                raise InputError(f"{name}: {bad[0]!r} is not a Slack ID (like C0123ABCD)")
        for name, number, low in (
            ("MAILCHECK_WORKER_CONCURRENCY", self.worker_concurrency, 1),
            ("MAILCHECK_POST_CONCURRENCY", self.post_concurrency, 1),
            ("MAILCHECK_JOB_RETRIES", self.job_retries, 1),
            ("MAILCHECK_JOB_HEARTBEAT", self.job_heartbeat, 1),
            ("MAILCHECK_SWEEP_INTERVAL", self.sweep_interval, 1),
            ("MAILCHECK_HTTP_PORT", self.http_port, 1),
            ("MAILCHECK_USER_RATE", self.user_rate, 0),
            ("MAILCHECK_DOMAIN_RATE", self.domain_rate, 0),
            ("MAILCHECK_RETENTION_DAYS", self.retention_days, 1),
            ("MAILCHECK_WATCH_MIN_INTERVAL", self.watch_min_interval, 1),
            ("MAILCHECK_MAX_WATCHES", self.max_watches, 0),
            ("MAILCHECK_SLACK_MAX_REPLIES", self.slack_max_replies, 2),  # a page and a summary
            *((spec.setting, getattr(self.budgets, n), spec.least) for n, spec in BUDGETS.items()),
        ):
            if number < low:
                raise InputError(f"{name} must be at least {low}, not {number}")
        self._validate_sendtest()
        if not 0 <= self.slack_grace <= 60:
            raise InputError(
                f"MAILCHECK_SLACK_GRACE must be 0 to 60 seconds, not {self.slack_grace:g}"
            )
        if not 0.1 <= self.watch_tick <= 3600:
            raise InputError(
                f"MAILCHECK_WATCH_TICK must be 0.1 to 3600 seconds, not {self.watch_tick:g}"
            )
        if self.retention_days > 3650:
            raise InputError(
                f"MAILCHECK_RETENTION_DAYS must be at most 3650, not {self.retention_days}"
            )
        return self

    def _validate_sendtest(self) -> None:
        if self.sendtest_domain:
            self.require_sendtest()
        if not 60 <= self.sendtest_ttl <= 86400:
            raise InputError(
                f"MAILCHECK_SENDTEST_TTL must be 60 to 86400 seconds, not {self.sendtest_ttl}"
            )
        self.receiver_address()  # raises InputError naming the bad value
        for name, number, low in (
            ("MAILCHECK_RECEIVER_MAX_SIZE", self.receiver_max_size, 1024),
            ("MAILCHECK_RECEIVER_MAX_CONNECTIONS", self.receiver_max_connections, 1),
            ("MAILCHECK_RECEIVER_RATE", self.receiver_rate, 0),
            ("MAILCHECK_RECEIVER_TOTAL_CONNECTIONS", self.receiver_total_connections, 1),
            # EHLO, STARTTLS, EHLO, MAIL, RCPT, DATA, QUIT, and a few to spare
            ("MAILCHECK_RECEIVER_MAX_COMMANDS", self.receiver_max_commands, 10),
            ("MAILCHECK_RECEIVER_MAX_RECIPIENTS", self.receiver_max_recipients, 1),
        ):
            if number < low:
                raise InputError(f"{name} must be at least {low}, not {number}")
        for name, prefix, low, high in (
            ("MAILCHECK_RECEIVER_PREFIX_V4", self.receiver_prefix_v4, 16, 32),
            ("MAILCHECK_RECEIVER_PREFIX_V6", self.receiver_prefix_v6, 32, 128),
        ):
            if not low <= prefix <= high:
                raise InputError(f"{name} must be a prefix length of {low} to {high}, not {prefix}")
        if bool(self.receiver_tls_cert) != bool(self.receiver_tls_key):
            raise InputError(
                "set both MAILCHECK_RECEIVER_TLS_CERT and MAILCHECK_RECEIVER_TLS_KEY, or neither"
            )
        for name, path in (
            ("MAILCHECK_RECEIVER_TLS_CERT", self.receiver_tls_cert),
            ("MAILCHECK_RECEIVER_TLS_KEY", self.receiver_tls_key),
        ):
            if path and not os.path.isfile(path):
                raise InputError(f"{name}: {path!r} does not exist")

    def receiver_address(self) -> tuple[str, int]:
        """MAILCHECK_RECEIVER_LISTEN as (host, port): `ADDRESS:PORT`, `[IPv6]:PORT`."""
        text = self.receiver_listen.strip()
        host, sep, port = text.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise InputError(
                f"MAILCHECK_RECEIVER_LISTEN={text!r}: give ADDRESS:PORT, e.g. 0.0.0.0:25"
            )
        try:
            parse_address(host)
        except InputError:
            raise InputError(
                f"MAILCHECK_RECEIVER_LISTEN={text!r}: {host!r} is not an IP address"
            ) from None
        return host, int(port)

    def require_sendtest(self) -> str:
        """The send-test domain; InputError saying how to set it up when there is none."""
        if not self.sendtest_domain:
            raise InputError(
                "send tests are not set up: set MAILCHECK_SENDTEST_DOMAIN to a domain whose MX "
                "points at `mailcheck receiver` (see README, Send tests)"
            )
        try:
            return normalize_domain(self.sendtest_domain).ascii
        except InputError as exc:
            raise InputError(f"MAILCHECK_SENDTEST_DOMAIN: {exc}") from None

    def require_slack(self) -> None:
        """The bot and the workers need a token (and the bot its mode's secret)."""
        if not self.slack_bot_token:
            raise InputError("SLACK_BOT_TOKEN is not set (see .env.example)")

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            nameservers=self.resolvers,
            policy=TargetPolicy(parse_networks(self.allow_targets)),
            ca_file=self.ca_file,
            timeouts=Timeouts(
                dns=self.dns_timeout,
                connect=self.connect_timeout,
                banner=self.banner_timeout,
                reply=self.reply_timeout,
                check=self.timeout,
            ),
            helo_name=self.helo_name,
            dnsbl_zones=self.dnsbl_zones,
            trust_anchors=self.trust_anchors(),
            ispdb_url=self.ispdb_url,
            accounts=self.accounts if len(self.accounts) else None,
            delivery_timeout=self.delivery_timeout,
            delivery_slow=self.delivery_slow,
            budgets=self.budgets,
        )

    def trust_anchors(self) -> tuple[str, ...] | None:
        """The DNSSEC trust anchor records in trust_anchor_file (None: the root's)."""
        if not self.trust_anchor_file:
            return None
        try:
            with open(self.trust_anchor_file, encoding="utf-8") as f:
                lines = tuple(
                    line.strip() for line in f if line.strip() and not line.lstrip().startswith(";")
                )
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"trust anchor file {self.trust_anchor_file!r}: {exc}") from None
        from checks.rules.dnssec import parse_anchors  # DNSSEC's stack, only for a file to read

        try:
            parse_anchors(lines)
        except InputError as exc:
            raise InputError(f"trust anchor file {self.trust_anchor_file!r}: {exc}") from None
        return lines

    @property
    def retention_seconds(self) -> int:
        """How long reports and the history of runs are kept."""
        return self.retention_days * 24 * 3600

    @property
    def job_timeout(self) -> int:
        """A job may run for the check's deadline plus posting to Slack."""
        return int(self.timeout) + 120


def _accounts(path: str, env: Mapping[str, str]) -> Accounts:
    """Test accounts from MAILCHECK_ACCOUNTS_FILE, then MAILCHECK_ACCOUNT_<NAME>_* (which win)."""
    from_file = Accounts.from_file(path) if path else Accounts()
    return from_file.merged(Accounts.from_env(env))


def parse_resolvers(values: list[str]) -> tuple[Nameserver, ...]:
    return tuple(Nameserver.parse(part) for value in values for part in _items(value))


def _items(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


ACCOUNTS_FILE = "MAILCHECK_ACCOUNTS_FILE"


def _shown(value: Any) -> str:
    """A default as its variable would spell it."""
    if value is None:
        return ""
    if isinstance(value, frozenset | tuple):
        return ",".join(sorted(str(v) for v in value))
    return f"{value:g}" if isinstance(value, float) else str(value)


# Every variable read, with its default, derived from the fields above. Slack's
# own names keep Slack's spelling.
DEFAULTS: dict[str, str] = {
    **{f.metadata["env"]: _shown(f.default) for f in fields(Settings) if "env" in f.metadata},
    ACCOUNTS_FILE: "",
    **{spec.setting: str(getattr(Budgets(), name)) for name, spec in BUDGETS.items()},
}
