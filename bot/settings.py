"""Every setting, read in one place from the environment (and CLI flags).

Nothing reads the environment at import time: `Settings.from_env()` is called
by the entry point, which passes the result down. `.env.example` documents
each variable; keep the two in step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from checks.config import EngineConfig, Nameserver, Timeouts
from checks.errors import InputError
from checks.names import normalize_domain
from checks.targets import TargetPolicy, parse_networks

# name -> (default, description): the table `.env.example` and the README follow.
ENV: dict[str, tuple[str, str]] = {
    "MAILCHECK_RESOLVER": (
        "",
        "Comma-separated resolver addresses (HOST or HOST:PORT, [IPv6]:PORT). Empty: the "
        "system resolver.",
    ),
    "MAILCHECK_ALLOW_TARGETS": (
        "",
        "Comma-separated networks (CIDR) the engine may reach even though they are "
        "private, loopback or otherwise non-public. Empty: public addresses only.",
    ),
    "MAILCHECK_CA_FILE": ("", "PEM file of extra trusted CA certificates for TLS checks."),
    "MAILCHECK_TIMEOUT": ("120", "Overall deadline of one check, in seconds."),
    "MAILCHECK_DNS_TIMEOUT": ("5", "Deadline of one DNS lookup, in seconds."),
    "MAILCHECK_CONNECT_TIMEOUT": ("10", "Deadline of one TCP connect, in seconds."),
    "MAILCHECK_BANNER_TIMEOUT": (
        "30",
        "How long to wait for a server's greeting, in seconds (postscreen delays it).",
    ),
    "MAILCHECK_REPLY_TIMEOUT": (
        "30",
        "How long to wait for a reply to one command or a TLS handshake, in seconds.",
    ),
    "MAILCHECK_HELO_NAME": ("mailcheck.invalid", "The name mailcheck gives in EHLO."),
}


@dataclass(frozen=True)
class Settings:
    resolvers: tuple[Nameserver, ...] = ()
    allow_targets: tuple[str, ...] = ()
    ca_file: str | None = None
    timeout: float = 120.0
    dns_timeout: float = 5.0
    connect_timeout: float = 10.0
    banner_timeout: float = 30.0
    reply_timeout: float = 30.0
    helo_name: str = "mailcheck.invalid"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def get(name: str) -> str:
            return env.get(name, ENV[name][0]).strip()

        return cls(
            resolvers=parse_resolvers([get("MAILCHECK_RESOLVER")]),
            allow_targets=tuple(n for n in get("MAILCHECK_ALLOW_TARGETS").split(",") if n.strip()),
            ca_file=get("MAILCHECK_CA_FILE") or None,
            timeout=_seconds("MAILCHECK_TIMEOUT", get("MAILCHECK_TIMEOUT")),
            dns_timeout=_seconds("MAILCHECK_DNS_TIMEOUT", get("MAILCHECK_DNS_TIMEOUT")),
            connect_timeout=_seconds("MAILCHECK_CONNECT_TIMEOUT", get("MAILCHECK_CONNECT_TIMEOUT")),
            banner_timeout=_seconds("MAILCHECK_BANNER_TIMEOUT", get("MAILCHECK_BANNER_TIMEOUT")),
            reply_timeout=_seconds("MAILCHECK_REPLY_TIMEOUT", get("MAILCHECK_REPLY_TIMEOUT")),
            helo_name=get("MAILCHECK_HELO_NAME"),
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
        ):
            if not 0 < value <= 3600:
                raise InputError(f"the {what} must be between 0 and 3600 seconds, not {value:g}")
        try:
            normalize_domain(self.helo_name)
        except InputError as exc:
            raise InputError(f"MAILCHECK_HELO_NAME: {exc}") from None
        if self.ca_file and not os.path.isfile(self.ca_file):
            raise InputError(f"CA file {self.ca_file!r} does not exist")
        return self

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
        )


def parse_resolvers(values: list[str]) -> tuple[Nameserver, ...]:
    return tuple(
        Nameserver.parse(part) for value in values for part in value.split(",") if part.strip()
    )


def _seconds(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{name}={text!r} is not a number of seconds") from None
    return value
