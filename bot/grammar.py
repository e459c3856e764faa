"""The `/mailcheck` slash-command grammar: what a user typed -> a Command.

    /mailcheck example.com                       CheckCommand, every stage
    /mailcheck example.com stage=tls,connect     only these stages (aliases: smtp, spf, cert...)
    /mailcheck example.com account=NAME          with a saved test account
    /mailcheck example.com selector=s1,s2        DKIM selectors to try first
    /mailcheck example.com sender-ip=192.0.2.1   does SPF let this address send?
    /mailcheck history example.com               HistoryCommand: the last checks in this channel
    /mailcheck diff example.com                  DiffCommand: what changed between the last two
    /mailcheck watch example.com every=6h        WatchCommand: check it on a schedule
    /mailcheck unwatch example.com               UnwatchCommand
    /mailcheck watches                           WatchesCommand: this channel's watches
    /mailcheck help                              HelpCommand (also "", -h, --help, ?)

Anything else is a UsageError whose message names the problem and ends with
USAGE. `parse` is a pure function: no Slack, no I/O, never raises.

Slack rewrites what people type before sending it: `example.com` arrives as
`<http://example.com|example.com>`, `a@b.com` as `<mailto:a@b.com|a@b.com>`,
and `&`, `<`, `>` as `&amp;`, `&lt;`, `&gt;`. Links are unwrapped (the label
when it names the same domain as the link, else the link's host or the
address's domain) and entities decoded before parsing. Messages are Slack
mrkdwn; anything of the user's echoed in them is escaped again, so a reply
can never ping `<!channel>`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias
from urllib.parse import urlsplit

from checks.core.errors import InputError
from checks.core.model import CHECK_STAGES, Stage
from checks.core.names import DomainName, normalize_domain, normalize_selector, normalize_sender_ip

MAX_TEXT = 500  # characters; a domain and two options fit easily

# What an admin might type for a stage, beyond the Stage values themselves.
STAGE_ALIASES: dict[str, Stage] = {
    "mx": Stage.DNS,
    "ptr": Stage.DNS,
    "srv": Stage.DNS,
    "smtp": Stage.CONNECT,
    "imap": Stage.CONNECT,
    "pop3": Stage.CONNECT,
    "submission": Stage.CONNECT,
    "cert": Stage.TLS,
    "certificate": Stage.TLS,
    "starttls": Stage.TLS,
    "spf": Stage.POLICY,
    "dmarc": Stage.POLICY,
    "dkim": Stage.POLICY,
    "mta-sts": Stage.POLICY,
    "dane": Stage.POLICY,
    "dnsbl": Stage.POLICY,
}

# Phones and Macs turn "--" into an em or en dash.
_DASHES = ("-", "\u2014", "\u2013")
_HELP_WORDS = frozenset({"", "help", "-h", "--help", "?", "\u2014help", "\u2013help"})
_ACCOUNT = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_OPTION_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_OPTIONS = {
    "stage": "stage",
    "stages": "stage",
    "account": "account",
    "selector": "selector",
    "selectors": "selector",
    "dkim": "selector",
    "sender-ip": "sender-ip",
    "sender": "sender-ip",
    "ip": "sender-ip",
}
_EXAMPLE_VALUE = {"stage": "tls", "account": "NAME", "selector": "s1", "sender-ip": "192.0.2.1"}
MAX_LIST = 8  # selectors or sender addresses in one command
_ANGLE = re.compile(r"<([^<>]*)>")


def _stage_list() -> str:
    parts = []
    for stage in CHECK_STAGES:
        aliases = [alias for alias, target in STAGE_ALIASES.items() if target is stage]
        parts.append(f"`{stage.value}`" + (f" ({', '.join(aliases)})" if aliases else ""))
    return ", ".join(parts)


USAGE = (
    "*Usage*\n"
    "• `/mailcheck example.com`: check a domain, every stage "
    "(an email address or a URL works too: its domain is checked)\n"
    "• `/mailcheck example.com stage=tls,connect`: only these stages\n"
    "• `/mailcheck example.com account=NAME`: also use the test account saved as NAME\n"
    "• `/mailcheck example.com selector=s1,s2`: try these DKIM selectors first\n"
    "• `/mailcheck example.com sender-ip=192.0.2.1`: does SPF let this address send?\n"
    "• `/mailcheck history example.com`: the last checks of a domain in this channel\n"
    "• `/mailcheck diff example.com`: what changed between its last two checks in this channel\n"
    "• `/mailcheck watch example.com every=6h`: check it every 6 hours (`30m`, `1d`...; "
    "`stage=` too) and post here when its verdict changes or a certificate is about to expire\n"
    "• `/mailcheck unwatch example.com`: stop that; `/mailcheck watches`: this channel's watches\n"
    "• `/mailcheck sendtest example.com`: get an address to send a message to from the "
    "domain's server, and a verdict on how it arrived (`account=NAME`: mailcheck sends it)\n"
    "• `/mailcheck help`: this text\n"
    f"Stages, with the other names they answer to: {_stage_list()}.\n"
    "Options go after the domain or before it, each at most once: "
    "`/mailcheck mx.example.org stage=cert account=ops-test`"
)


@dataclass(frozen=True)
class CheckCommand:
    domain: DomainName
    stages: frozenset[Stage] | None = None  # None: every stage
    account: str | None = None
    dkim_selectors: tuple[str, ...] = ()
    sender_ips: tuple[str, ...] = ()


@dataclass(frozen=True)
class HistoryCommand:
    domain: DomainName


@dataclass(frozen=True)
class DiffCommand:
    domain: DomainName


@dataclass(frozen=True)
class WatchCommand:
    domain: DomainName
    every: int  # seconds
    stages: frozenset[Stage] | None = None


@dataclass(frozen=True)
class UnwatchCommand:
    domain: DomainName


@dataclass(frozen=True)
class WatchesCommand:
    pass


@dataclass(frozen=True)
class SendTestCommand:
    domain: DomainName
    account: str | None = None  # a test account: the worker submits the message itself


@dataclass(frozen=True)
class HelpCommand:
    pass


@dataclass(frozen=True)
class UsageError:
    """Not an exception: a reply. `message` is Slack mrkdwn ending with USAGE."""

    message: str


Command: TypeAlias = (
    CheckCommand
    | HistoryCommand
    | DiffCommand
    | WatchCommand
    | UnwatchCommand
    | WatchesCommand
    | SendTestCommand
    | HelpCommand
    | UsageError
)
Subcommand: TypeAlias = (
    HistoryCommand | DiffCommand | WatchCommand | UnwatchCommand | WatchesCommand | SendTestCommand
)
# Each subcommand: whether it takes a domain, and its options.
_SUBCOMMANDS: dict[str, tuple[bool, tuple[str, ...]]] = {
    "history": (True, ()),
    "diff": (True, ()),
    "watch": (True, ("every", "stage")),
    "unwatch": (True, ()),
    "watches": (False, ()),
    "sendtest": (True, ("account",)),
}
_SUBCOMMAND_OPTIONS = {
    "every": "every",
    "interval": "every",
    "stage": "stage",
    "stages": "stage",
    "account": "account",
}
DEFAULT_EVERY = 6 * 3600
MAX_EVERY = 7 * 24 * 3600
_DURATION = re.compile(
    r"(\d{1,6})\s*(s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?|d|days?)", re.IGNORECASE
)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class _Problem(Exception):
    """Internal: what is wrong with the input, in mrkdwn, without the usage text."""


def parse(text: str) -> Command:
    """The command in a slash command's `text`; never raises."""
    if len(text) > MAX_TEXT:
        return _usage_error(
            f"That is {len(text)} characters long; a command has at most {MAX_TEXT}."
        )
    try:
        plain = _unwrap_slack(text)
        if plain.strip().lower() in _HELP_WORDS:
            return HelpCommand()
        tokens = plain.split()
        if tokens[0].lower() in _SUBCOMMANDS:
            return _parse_subcommand(tokens[0].lower(), tokens[1:])
        return _parse_tokens(tokens)
    except _Problem as problem:
        return _usage_error(str(problem))


def _usage_error(problem: str) -> UsageError:
    return UsageError(f"{problem}\n\n{USAGE}")


def _parse_subcommand(name: str, tokens: list[str]) -> Subcommand:
    """`history|diff|unwatch DOMAIN`, `watch DOMAIN [every=6h] [stage=...]`, `watches`."""
    takes_domain, allowed = _SUBCOMMANDS[name]
    example = f"`/mailcheck {name}{' example.com' if takes_domain else ''}`"
    words: list[str] = []  # what is not an option: the domain, or words that are none
    options: dict[str, str] = {}
    for token in tokens:
        if token.lower() in _HELP_WORDS or token.lower() in _SUBCOMMANDS:
            raise _Problem(f"{_show(token)} cannot follow `{name}`; write {example}.")
        option, eq, value = token.partition("=")
        canonical = _SUBCOMMAND_OPTIONS.get(option.lower()) if eq else None
        if token.startswith(_DASHES) or eq:
            if canonical in allowed and not token.startswith(_DASHES):
                assert canonical is not None
                if canonical in options:
                    raise _Problem(f"{_show(canonical + '=')} is given twice; give it once.")
                if not value:
                    raise _Problem(f"{_show(option + '=')} has no value, as in `every=6h`.")
                options[canonical] = value
                continue
            if token.startswith(_DASHES):
                shown = option if eq else token
            else:
                shown = option + "=" if option else token
            takes = (
                "the options " + " and ".join(f"`{o}=`" for o in allowed)
                if allowed
                else "no options"
            )
            raise _Problem(
                f"Unknown option {_show(shown)}: `{name}` takes {takes}, as in {example}."
            )
        if not takes_domain:
            raise _Problem(f"`{name}` takes no domain: write {example}.")
        words.append(token)
    if not takes_domain:
        return WatchesCommand()
    if not words:
        raise _Problem(f"No domain given: say which domain, as in {example}.")
    domain_text = _one_domain(words, f"`{name}` takes one")
    try:
        domain = normalize_domain(domain_text)
    except InputError as exc:
        raise _Problem(f"Not a domain: {_escape(str(exc))}.") from exc
    if name == "watch":
        every = _parse_every(options["every"]) if "every" in options else DEFAULT_EVERY
        stages = _parse_stages(options["stage"]) if "stage" in options else None
        return WatchCommand(domain, every, stages)
    if name == "sendtest":
        account = _parse_account(options["account"]) if "account" in options else None
        return SendTestCommand(domain, account)
    if name == "history":
        return HistoryCommand(domain)
    if name == "diff":
        return DiffCommand(domain)
    return UnwatchCommand(domain)


def _parse_every(value: str) -> int:
    """`30m`, `6h`, `1d` (and `6 hours`-style words) -> seconds; at most a week.
    The shortest interval allowed is a setting, checked where the watch is set."""
    match = _DURATION.fullmatch(value.strip())
    if not match:
        raise _Problem(
            f"Bad interval {_show(value)}: write a number and `m`, `h` or `d`, "
            "such as `every=6h` or `every=1d`."
        )
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)[0].lower()]
    if not 0 < seconds <= MAX_EVERY:
        raise _Problem(f"`every=` must be more than 0 and at most 7 days, not {_show(value)}.")
    return seconds


def describe_every(seconds: int) -> str:
    """6h, 30m, 1d, 90s: the interval as a person writes it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _parse_tokens(tokens: list[str]) -> CheckCommand:
    words: list[str] = []  # what is not an option: the domain, or words that are none
    options: dict[str, tuple[str, str]] = {}  # canonical name -> (as typed, value)
    for token in tokens:
        if token.lower() in _SUBCOMMANDS:
            raise _Problem(f"{_show(token)} goes first: `/mailcheck {token.lower()} example.com`.")
        if token.lower() in _HELP_WORDS:
            raise _Problem(f"{_show(token)} goes alone: `/mailcheck {_escape(token)}`.")
        name, eq, value = token.partition("=")
        if eq and not name:
            raise _Problem(f"{_show(token)} has no option name before `=`; try `stage=tls`.")
        if token.startswith(_DASHES):
            raise _Problem(
                f"Unknown option {_show(name if eq else token)}: options are written "
                "`name=value`, such as `stage=tls`."
            )
        if eq and _OPTION_NAME.fullmatch(name):
            canonical = _OPTIONS.get(name.lower())
            if canonical is None:
                raise _Problem(
                    f"Unknown option {_show(name + '=')}; the options are `stage=`, "
                    "`account=`, `selector=` and `sender-ip=`."
                )
            if canonical in options:
                raise _Problem(f"{_show(canonical + '=')} is given twice; give it once.")
            if not value:
                raise _Problem(
                    f"{_show(name + '=')} has no value: write it without spaces, "
                    f"such as `{canonical}={_EXAMPLE_VALUE[canonical]}`."
                )
            options[canonical] = (name, value)
            continue
        words.append(token)

    if not words:
        raise _Problem("No domain given: say which domain to check.")
    domain_text = _one_domain(words, "check one at a time")
    try:
        domain = normalize_domain(domain_text)
    except InputError as exc:
        raise _Problem(f"Not a domain I can check: {_escape(str(exc))}.") from exc
    stages = _parse_stages(options["stage"][1]) if "stage" in options else None
    account = _parse_account(options["account"][1]) if "account" in options else None
    selectors = _parse_list(options, "selector", normalize_selector)
    senders = _parse_list(options, "sender-ip", normalize_sender_ip)
    return CheckCommand(domain, stages, account, selectors, senders)


def _one_domain(words: list[str], one: str) -> str:
    """The one domain among the `words` typed besides the options. Several
    words are two domains only when each is one; "not a domain!!" is a
    phrase, and the reply says the input is not a domain (`one`: how the
    command asks for a single domain, after "Two domains given...;")."""
    if len(words) == 1:
        return words[0]
    domains = [word for word in words if _is_domain(word)]
    if len(domains) == len(words):
        raise _Problem(f"Two domains given, {_show(words[0])} and {_show(words[1])}; {one}.")
    if domains:
        others = " ".join(word for word in words if word not in domains)
        raise _Problem(
            f"{_show(others)} is neither a domain nor an option: give one domain, and "
            "write options as `name=value`."
        )
    raise _Problem(
        f"{_show(' '.join(words))} is not a domain: give one domain, with no spaces, "
        "such as `example.com` (or an email address or a URL)."
    )


def _is_domain(word: str) -> bool:
    try:
        normalize_domain(word)
    except InputError:
        return False
    return True


def _parse_list(
    options: dict[str, tuple[str, str]], name: str, normalize: Callable[[str], str]
) -> tuple[str, ...]:
    if name not in options:
        return ()
    items = [item for item in options[name][1].split(",") if item.strip()]
    if not items or len(items) > MAX_LIST:
        raise _Problem(f"`{name}=` takes 1 to {MAX_LIST} values, separated by commas.")
    try:
        return tuple(dict.fromkeys(normalize(item) for item in items))
    except InputError as exc:
        raise _Problem(f"{_escape(str(exc))}.") from exc


def _parse_stages(value: str) -> frozenset[Stage]:
    names = [name.strip().lower() for name in value.split(",") if name.strip()]
    if not names:
        raise _Problem("`stage=` has no stage in it; write such as `stage=tls,connect`.")
    by_name = {stage.value: stage for stage in CHECK_STAGES} | STAGE_ALIASES
    unknown = [name for name in names if name not in by_name]
    if unknown:
        which = "stage" if len(unknown) == 1 else "stages"
        shown = ", ".join(_show(name) for name in unknown)
        raise _Problem(f"Unknown {which} {shown}. Valid stages: {_stage_list()}.")
    return frozenset(by_name[name] for name in names)


def _parse_account(value: str) -> str:
    if not _ACCOUNT.fullmatch(value):
        raise _Problem(
            f"Bad account name {_show(value)}: an account name is 1 to 32 letters, digits, "
            "`.`, `_` or `-`."
        )
    return value


# --- Slack's rewriting of the text ---------------------------------------------


def _unwrap_slack(text: str) -> str:
    """The text as the user typed it: links unwrapped, entities decoded."""
    pieces = _ANGLE.split(text)  # even indexes: plain text; odd: inside <...>
    out = []
    for index, piece in enumerate(pieces):
        out.append(_unwrap_link(piece) if index % 2 else _unescape(piece))
    return "".join(out)


def _unwrap_link(inner: str) -> str:
    target, _, label = inner.partition("|")
    if target.startswith(("@", "#", "!")):
        kind = {"@": "a person", "#": "a channel", "!": "a group"}[target[0]]
        name = _unescape(label).lstrip("@#") or target[1:].split("^")[0]
        shown = ("#" if target[0] == "#" else "@") + name
        raise _Problem(f"{_show(shown)} mentions {kind}; give a domain to check instead.")
    target, label = _unescape(target).strip(), _unescape(label).strip()
    from_target = _link_domain(target)
    if label and from_target is not None and _same_domain(label, from_target):
        return label
    if from_target is not None:
        return from_target
    return label or target  # nothing better: let the domain check explain


def _link_domain(target: str) -> str | None:
    """The host of a URL, or the domain of a mailto: address."""
    if target.lower().startswith("mailto:"):
        address = target[len("mailto:") :].split("?", 1)[0]
        local, at, domain = address.rpartition("@")
        return domain if at and local and domain else None
    if "://" in target:
        try:
            return urlsplit(target).hostname or None
        except ValueError:
            return None
    return None


def _same_domain(one: str, other: str) -> bool:
    try:
        return normalize_domain(one).ascii == normalize_domain(other).ascii
    except InputError:
        return False


def _unescape(text: str) -> str:
    # Slack escapes only these three; &amp; last, so "&amp;lt;" stays "&lt;".
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _show(text: str, limit: int = 60) -> str:
    """User input for a message: bounded, in a code span, harmless to Slack."""
    shown = text if len(text) <= limit else text[:limit] + "…"
    shown = "".join(ch if ch.isprintable() else "?" for ch in shown).replace("`", "'")
    return f"`{_escape(shown)}`"
