"""Every setting, read in one place from the environment (and CLI flags).

Nothing reads the environment at import time: `Settings.from_env()` is called
by the entry point, which passes the result down. `.env.example` documents
each variable (a test keeps the two in step). Secrets are kept out of `repr`,
so a logged Settings shows no token.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from checks.core.accounts import Accounts
from checks.core.config import Budgets, EngineConfig, Nameserver, Timeouts
from checks.core.errors import InputError
from checks.core.names import normalize_domain
from checks.core.targets import TargetPolicy, parse_address, parse_networks
from checks.net.budget import BUDGETS

# Every variable read, with its default. Slack's own names keep Slack's spelling.
DEFAULTS: dict[str, str] = {
    "MAILCHECK_RESOLVER": "",
    "MAILCHECK_ALLOW_TARGETS": "",
    "MAILCHECK_CA_FILE": "",
    "MAILCHECK_TIMEOUT": "120",
    "MAILCHECK_DNS_TIMEOUT": "5",
    "MAILCHECK_CONNECT_TIMEOUT": "10",
    "MAILCHECK_BANNER_TIMEOUT": "30",
    "MAILCHECK_REPLY_TIMEOUT": "30",
    "MAILCHECK_HELO_NAME": "mailcheck.invalid",
    "MAILCHECK_DNSBL_ZONES": "",
    "MAILCHECK_TRUST_ANCHORS": "",
    "MAILCHECK_ISPDB_URL": "https://autoconfig.thunderbird.net/v1.1/",
    "MAILCHECK_ACCOUNTS_FILE": "",
    "MAILCHECK_DELIVERY_TIMEOUT": "120",
    "MAILCHECK_DELIVERY_SLOW": "30",
    # Per-check budgets (checks.net.budget): MAILCHECK_MAX_MX_HOSTS, MAILCHECK_MAX_ADDRESSES, ...
    **{spec.setting: str(getattr(Budgets(), name)) for name, spec in BUDGETS.items()},
    "SLACK_BOT_TOKEN": "",
    "SLACK_APP_TOKEN": "",
    "SLACK_SIGNING_SECRET": "",
    "SLACK_API_URL": "https://slack.com/api/",
    "MAILCHECK_SLACK_MODE": "socket",
    "MAILCHECK_SLACK_MAX_REPLIES": "20",
    "MAILCHECK_SLACK_GRACE": "1.5",
    "MAILCHECK_HTTP_HOST": "127.0.0.1",
    "MAILCHECK_HTTP_PORT": "3000",
    "MAILCHECK_REDIS_URL": "redis://127.0.0.1:6379/0",
    "MAILCHECK_WORKER_CONCURRENCY": "4",
    "MAILCHECK_POST_CONCURRENCY": "64",
    "MAILCHECK_JOB_RETRIES": "3",
    "MAILCHECK_JOB_HEARTBEAT": "30",
    "MAILCHECK_SWEEP_INTERVAL": "10",
    "MAILCHECK_ALLOWED_CHANNELS": "",
    "MAILCHECK_ALLOWED_USERS": "",
    "MAILCHECK_ADMIN_USERS": "",
    "MAILCHECK_USER_RATE": "20",
    "MAILCHECK_DOMAIN_RATE": "30",
    "MAILCHECK_RETENTION_DAYS": "90",
    "MAILCHECK_WATCH_TICK": "30",
    "MAILCHECK_WATCH_MIN_INTERVAL": "900",
    "MAILCHECK_MAX_WATCHES": "20",
    "MAILCHECK_SENDTEST_DOMAIN": "",
    "MAILCHECK_SENDTEST_TTL": "1800",
    "MAILCHECK_RECEIVER_LISTEN": "0.0.0.0:25",
    "MAILCHECK_RECEIVER_HOSTNAME": "",
    "MAILCHECK_RECEIVER_TLS_CERT": "",
    "MAILCHECK_RECEIVER_TLS_KEY": "",
    "MAILCHECK_RECEIVER_MAX_SIZE": "10485760",
    "MAILCHECK_RECEIVER_MAX_CONNECTIONS": "5",
    "MAILCHECK_RECEIVER_RATE": "60",
    "MAILCHECK_RECEIVER_TOTAL_CONNECTIONS": "20",
    "MAILCHECK_RECEIVER_MAX_COMMANDS": "100",
    "MAILCHECK_RECEIVER_MAX_RECIPIENTS": "5",
    "MAILCHECK_RECEIVER_PREFIX_V4": "24",
    "MAILCHECK_RECEIVER_PREFIX_V6": "64",
}


_SLACK_ID = re.compile(r"^[A-Z0-9]{2,32}$")


@dataclass(frozen=True)
class Settings:
    # -- the engine ------------------------------------------------------------
    resolvers: tuple[Nameserver, ...] = ()
    allow_targets: tuple[str, ...] = ()
    ca_file: str | None = None
    timeout: float = 120.0
    dns_timeout: float = 5.0
    connect_timeout: float = 10.0
    banner_timeout: float = 30.0
    reply_timeout: float = 30.0
    helo_name: str = "mailcheck.invalid"
    dnsbl_zones: tuple[str, ...] | None = None  # None: the built-in list; (): none
    trust_anchor_file: str | None = None  # None: the IANA root anchors
    ispdb_url: str = "https://autoconfig.thunderbird.net/v1.1/"  # "": skip the ISPDB
    accounts: Accounts = field(default_factory=Accounts, repr=False)  # test accounts (secrets)
    delivery_timeout: float = 120.0
    delivery_slow: float = 30.0
    budgets: Budgets = field(default_factory=Budgets)  # what one check may do at most
    # -- Slack -------------------------------------------------------------------
    slack_bot_token: str = field(default="", repr=False)
    slack_app_token: str = field(default="", repr=False)
    slack_signing_secret: str = field(default="", repr=False)
    slack_api_url: str = "https://slack.com/api/"
    slack_mode: str = "socket"  # or "http"
    slack_max_replies: int = 20  # thread replies of one report, its summary included
    slack_grace: float = 1.5  # a check done this soon posts its whole thread at once
    http_host: str = "127.0.0.1"
    http_port: int = 3000
    # -- queue and workers ---------------------------------------------------------
    redis_url: str = field(default="redis://127.0.0.1:6379/0", repr=False)  # may hold a password
    worker_concurrency: int = 4
    post_concurrency: int = 64  # threads one worker posts at once (paced per channel)
    job_retries: int = 3
    job_heartbeat: int = 30
    sweep_interval: int = 10
    # -- who may ask, how often -------------------------------------------------------
    allowed_channels: frozenset[str] = frozenset()  # empty: every channel
    allowed_users: frozenset[str] = frozenset()  # empty: everyone
    admin_users: frozenset[str] = frozenset()  # may stop or replace anyone's watch
    user_rate: int = 20  # checks per user per hour
    domain_rate: int = 30  # checks of one domain per hour
    retention_days: int = 90  # stored reports and the history of runs
    # -- watches -----------------------------------------------------------------------
    watch_tick: float = 30.0  # how often each worker looks for due watches
    watch_min_interval: int = 900  # the shortest every= allowed (seconds)
    max_watches: int = 20  # per channel
    # -- the send test and its receiver ----------------------------------------------
    sendtest_domain: str = ""  # where test addresses live; "": no send tests
    sendtest_ttl: int = 1800  # seconds a test address takes its message
    receiver_listen: str = "0.0.0.0:25"
    receiver_hostname: str = ""  # the greeting's name; "": the send-test domain
    receiver_tls_cert: str = ""
    receiver_tls_key: str = ""
    receiver_max_size: int = 10 * 1024 * 1024
    receiver_max_connections: int = 5  # per source network at once
    receiver_rate: int = 60  # connections per source network per hour (0: no limit)
    receiver_total_connections: int = 20  # from all sources at once
    receiver_max_commands: int = 100  # per session
    receiver_max_recipients: int = 5  # RCPTs per message (each may be a Redis lookup)
    receiver_prefix_v4: int = 24  # a source network: the sender's /24
    receiver_prefix_v6: int = 64  # ... or /64

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def get(name: str) -> str:
            return env.get(name, DEFAULTS[name]).strip()

        return cls(
            resolvers=parse_resolvers([get("MAILCHECK_RESOLVER")]),
            allow_targets=tuple(_items(get("MAILCHECK_ALLOW_TARGETS"))),
            ca_file=get("MAILCHECK_CA_FILE") or None,
            timeout=_number("MAILCHECK_TIMEOUT", get),
            dns_timeout=_number("MAILCHECK_DNS_TIMEOUT", get),
            connect_timeout=_number("MAILCHECK_CONNECT_TIMEOUT", get),
            banner_timeout=_number("MAILCHECK_BANNER_TIMEOUT", get),
            reply_timeout=_number("MAILCHECK_REPLY_TIMEOUT", get),
            helo_name=get("MAILCHECK_HELO_NAME"),
            dnsbl_zones=_zones(get("MAILCHECK_DNSBL_ZONES")),
            trust_anchor_file=get("MAILCHECK_TRUST_ANCHORS") or None,
            ispdb_url=get("MAILCHECK_ISPDB_URL"),
            accounts=_accounts(get("MAILCHECK_ACCOUNTS_FILE"), env),
            delivery_timeout=_number("MAILCHECK_DELIVERY_TIMEOUT", get),
            delivery_slow=_number("MAILCHECK_DELIVERY_SLOW", get),
            budgets=Budgets(
                **{
                    name: int(_number(spec.setting, get, whole=True))
                    for name, spec in BUDGETS.items()
                }
            ),
            slack_bot_token=get("SLACK_BOT_TOKEN"),
            slack_app_token=get("SLACK_APP_TOKEN"),
            slack_signing_secret=get("SLACK_SIGNING_SECRET"),
            slack_api_url=get("SLACK_API_URL"),
            slack_mode=get("MAILCHECK_SLACK_MODE").lower(),
            slack_max_replies=int(_number("MAILCHECK_SLACK_MAX_REPLIES", get, whole=True)),
            slack_grace=_number("MAILCHECK_SLACK_GRACE", get),
            http_host=get("MAILCHECK_HTTP_HOST"),
            http_port=int(_number("MAILCHECK_HTTP_PORT", get, whole=True)),
            redis_url=get("MAILCHECK_REDIS_URL"),
            worker_concurrency=int(_number("MAILCHECK_WORKER_CONCURRENCY", get, whole=True)),
            post_concurrency=int(_number("MAILCHECK_POST_CONCURRENCY", get, whole=True)),
            job_retries=int(_number("MAILCHECK_JOB_RETRIES", get, whole=True)),
            job_heartbeat=int(_number("MAILCHECK_JOB_HEARTBEAT", get, whole=True)),
            sweep_interval=int(_number("MAILCHECK_SWEEP_INTERVAL", get, whole=True)),
            allowed_channels=frozenset(_items(get("MAILCHECK_ALLOWED_CHANNELS"))),
            allowed_users=frozenset(_items(get("MAILCHECK_ALLOWED_USERS"))),
            admin_users=frozenset(_items(get("MAILCHECK_ADMIN_USERS"))),
            user_rate=int(_number("MAILCHECK_USER_RATE", get, whole=True)),
            domain_rate=int(_number("MAILCHECK_DOMAIN_RATE", get, whole=True)),
            retention_days=int(_number("MAILCHECK_RETENTION_DAYS", get, whole=True)),
            watch_tick=_number("MAILCHECK_WATCH_TICK", get),
            watch_min_interval=int(_number("MAILCHECK_WATCH_MIN_INTERVAL", get, whole=True)),
            max_watches=int(_number("MAILCHECK_MAX_WATCHES", get, whole=True)),
            sendtest_domain=get("MAILCHECK_SENDTEST_DOMAIN"),
            sendtest_ttl=int(_number("MAILCHECK_SENDTEST_TTL", get, whole=True)),
            receiver_listen=get("MAILCHECK_RECEIVER_LISTEN"),
            receiver_hostname=get("MAILCHECK_RECEIVER_HOSTNAME"),
            receiver_tls_cert=get("MAILCHECK_RECEIVER_TLS_CERT"),
            receiver_tls_key=get("MAILCHECK_RECEIVER_TLS_KEY"),
            receiver_max_size=int(_number("MAILCHECK_RECEIVER_MAX_SIZE", get, whole=True)),
            receiver_max_connections=int(
                _number("MAILCHECK_RECEIVER_MAX_CONNECTIONS", get, whole=True)
            ),
            receiver_rate=int(_number("MAILCHECK_RECEIVER_RATE", get, whole=True)),
            receiver_total_connections=int(
                _number("MAILCHECK_RECEIVER_TOTAL_CONNECTIONS", get, whole=True)
            ),
            receiver_max_commands=int(_number("MAILCHECK_RECEIVER_MAX_COMMANDS", get, whole=True)),
            receiver_max_recipients=int(
                _number("MAILCHECK_RECEIVER_MAX_RECIPIENTS", get, whole=True)
            ),
            receiver_prefix_v4=int(_number("MAILCHECK_RECEIVER_PREFIX_V4", get, whole=True)),
            receiver_prefix_v6=int(_number("MAILCHECK_RECEIVER_PREFIX_V6", get, whole=True)),
        ).validated()

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


def _zones(text: str) -> tuple[str, ...] | None:
    """Empty: the built-in list; "none": no blocklist checks; else the zones given."""
    if not text:
        return None
    if text.lower() == "none":
        return ()
    return tuple(normalize_domain(z).ascii for z in _items(text))


def _items(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _number(name: str, get: Any, whole: bool = False) -> float:
    text = get(name)
    try:
        return int(text) if whole else float(text)
    except ValueError:
        kind = "a whole number" if whole else "a number of seconds"
        raise InputError(f"{name}={text!r} is not {kind}") from None
