"""Test accounts: mailboxes the operator lets mailcheck log in to, and their secrets.

An operator stores credentials server-side as named profiles, in a TOML file
that only its owner can read or in `MAILCHECK_ACCOUNT_<NAME>_*` variables;
users only ever name a profile (`--account NAME`, `account=NAME`).

    [accounts.work]
    address = "probe@example.com"      # the mailbox; round trips are sent to it
    username = "probe"                 # login name; default: the address
    password = "correct horse battery"
    smtp = "smtp.example.com:587"      # optional: the submission server to use
    imap = "imap.example.com:993"      # optional: the IMAP server to use
    domains = ["example.net"]          # optional: more domains it may be used for
    tls_verify = false                 # optional, for labs only: see below

An account is used only for checks of its own domains: its address's domain
and those `domains` lists (`Account.serves`; the front ends refuse any other
before queueing, and the engine refuses again). Its password goes only over
TLS whose certificate verifies for the host name used, as a mail client's
would; `tls_verify = false` lifts that, and every report then says so.

A password must never reach a transcript, log line, report or exception, nor
any form a client sends it in: base64 (AUTH LOGIN), base64 of
`authzid\\0user\\0password` (AUTH PLAIN), an IMAP quoted string. A `Redactor`
knows every such form and replaces each by "[redacted]"; `plain_blob`,
`login_blobs` and `imap_quoted` build what the probes send, so the two agree.

Profile names are case-insensitive (kept in lower case). Problems raise
InputError naming the source, the profile and the key, never a password.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from checks.core.errors import InputError
from checks.core.names import DomainName, normalize_domain
from checks.core.text import visible

REDACTED = "[redacted]"
MIN_PASSWORD = 8
ENV_PREFIX = "MAILCHECK_ACCOUNT_"

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_KEYS = ("address", "username", "password", "smtp", "imap", "domains", "tls_verify")
_TEXT_KEYS = _KEYS[:5]
_MAX_FILE = 1024 * 1024  # bytes


class AccountError(InputError):
    """A profile's value is wrong: says which profile, which key, and why (never the value
    of a password). The loaders re-raise it naming the file or the variable."""

    def __init__(self, profile: str, key: str, problem: str) -> None:
        super().__init__(f"test account {_show(profile)}: {key} {problem}")
        self.profile, self.key, self.problem = profile, key, problem


@dataclass(frozen=True, kw_only=True)
class Account:
    """One test mailbox. Keyword arguments only, so a password is never passed by position.

    `username=""` means the address. Everything is checked on construction
    (AccountError, an InputError). `repr` and `str` never show the password.
    """

    name: str  # profile name: 1-32 of [A-Za-z0-9_.-], kept in lower case
    address: str  # the mailbox's email address (round trips are sent to it)
    username: str = ""  # login name; "" means the address
    password: str = field(repr=False)
    smtp: str | None = None  # "host:port" of the submission server; None: what the check finds
    imap: str | None = None  # "host:port" of the IMAP server; None: what the check finds
    domains: tuple[str, ...] = ()  # more domains it may be used for (A-labels, lower case)
    tls_verify: bool = True  # False: send the password even where the certificate fails

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise AccountError(
                self.name, "name", "must be 1 to 32 of the characters A-Z a-z 0-9 _ . -"
            )
        name = self.name.lower()
        object.__setattr__(self, "name", name)
        for key in _TEXT_KEYS:
            optional = key not in ("address", "password")
            if not isinstance(getattr(self, key), str | None if optional else str):
                raise AccountError(name, key, "must be a string")
        _check_address(name, self.address)
        if not self.username:
            object.__setattr__(self, "username", self.address)
        elif visible(self.username) != self.username:
            raise AccountError(
                name, "username", "contains a control character, which no login can carry"
            )
        _check_password(name, self.password)
        if not isinstance(self.tls_verify, bool):
            raise AccountError(name, "tls_verify", "must be true or false")
        object.__setattr__(self, "domains", _check_domains(name, self.domains))
        for key in ("smtp", "imap"):
            value = getattr(self, key)
            if value is not None:
                try:
                    split_hostport(value)
                except InputError as exc:
                    raise AccountError(name, key, str(exc)) from None

    @property
    def domain(self) -> DomainName:
        """The address's domain."""
        return normalize_domain(self.address.rpartition("@")[2])

    @property
    def own_domains(self) -> tuple[str, ...]:
        """The domains this account may be used for (A-labels): the address's first."""
        return tuple(dict.fromkeys((self.domain.ascii, *self.domains)))

    def serves(self, domain: str) -> bool:
        """May this account be used for a check of `domain` (any case, A- or U-label)?
        Only its own domains exactly: a subdomain can be someone else's server."""
        try:
            ascii_name = normalize_domain(domain).ascii
        except InputError:
            return False
        return ascii_name in self.own_domains

    def refuse_unless_serves(self, domain: str) -> None:
        """InputError naming the account, the domain and the account's domains,
        unless `serves(domain)`."""
        if not self.serves(domain):
            raise AccountMisuse(self, domain)

    def __repr__(self) -> str:
        return (
            f"Account(name={self.name!r}, address={self.address!r}, "
            f"username={self.username!r}, password=<hidden>, "
            f"smtp={self.smtp!r}, imap={self.imap!r}, domains={self.domains!r}, "
            f"tls_verify={self.tls_verify!r})"
        )

    def __str__(self) -> str:
        return f"test account {self.name} ({self.address})"


class AccountMisuse(InputError):
    """A test account named for a check of a domain that is not its own."""

    def __init__(self, account: Account, domain: str) -> None:
        own = ", ".join(account.own_domains)
        super().__init__(
            f"test account {account.name!r} may be used only for its own domains ({own}), "
            f"not for {_show(domain, 255)}: its password would go to that domain's servers. "
            "If the domain is yours too, list it in the account's `domains`."
        )
        self.account, self.domain = account.name, domain


def _check_domains(name: str, domains: object) -> tuple[str, ...]:
    if isinstance(domains, str) or not isinstance(domains, list | tuple):
        raise AccountError(name, "domains", 'must be a list of domains, like ["example.net"]')
    names = []
    for domain in domains:
        if not isinstance(domain, str):
            raise AccountError(name, "domains", "must hold only strings")
        try:
            names.append(normalize_domain(domain).ascii)
        except InputError as exc:
            raise AccountError(name, "domains", f"holds {_show(domain)}: {exc}") from None
    return tuple(dict.fromkeys(names))


def _check_address(name: str, address: str) -> None:
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise AccountError(name, "address", f"{_show(address)} is not an email address")
    if len(local) > 64 or any(ch.isspace() for ch in local) or visible(local) != local:
        raise AccountError(
            name,
            "address",
            f"{_show(address)} is not an email address: bad characters before '@' "
            "(or more than 64)",
        )
    try:
        normalize_domain(domain)
    except InputError as exc:
        raise AccountError(
            name, "address", f"{_show(address)} is not an email address: {exc}"
        ) from None


def _check_password(name: str, password: str) -> None:
    if not password:
        raise AccountError(name, "password", "is missing")
    if len(password) < MIN_PASSWORD:
        raise AccountError(
            name,
            "password",
            f"is shorter than {MIN_PASSWORD} characters: too weak for a mailbox on the "
            "internet, and too short to redact safely (every occurrence of it in ordinary "
            "text, transcripts and reports would be blanked out)",
        )
    if visible(password) != password:
        raise AccountError(
            name,
            "password",
            "contains a control or bidi-override character (NUL, CR, LF...), which "
            "AUTH PLAIN and IMAP LOGIN cannot carry",
        )


def split_hostport(text: str) -> tuple[str, int]:
    """`HOST:PORT` or `[IPv6]:PORT` as (host, port); host is a name or an IP address.

    InputError (saying what is expected) otherwise.
    """
    expected = f"must be HOST:PORT (like smtp.example.com:587), not {_show(text)}"
    raw = text.strip()
    if raw.startswith("["):
        host, close, rest = raw[1:].partition("]")
        if not close or not rest.startswith(":"):
            raise InputError(expected)
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise InputError(f"{expected}: {_show(host)} is not an IPv6 address") from None
    else:
        host, colon, port_text = raw.rpartition(":")
        if not colon or not host or ":" in host:
            raise InputError(expected)
        if not _is_host(host):
            raise InputError(f"{expected}: {_show(host)} is not a host name or IP address")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InputError(f"{expected}: the port must be a number from 1 to 65535")
    return host, int(port_text)


def _is_host(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        pass
    else:
        return True
    name = host.rstrip(".")
    if not name.isascii():
        try:
            name = normalize_domain(name).ascii
        except InputError:
            return False
    return len(name) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in name.split("."))


class Accounts:
    """Test accounts by (case-insensitive) profile name; immutable.

    A read-only mapping: `len`, `in`, iteration over the names, `accounts[name]`
    (KeyError), `keys()`, `values()`, `items()`; `get(name)` raises InputError
    for a user-facing "no such account".
    """

    __slots__ = ("_by_name",)

    def __init__(self, accounts: Iterable[Account] = ()) -> None:
        by_name: dict[str, Account] = {}
        for account in accounts:
            if account.name in by_name:
                raise InputError(f"test account {account.name!r} is defined twice")
            by_name[account.name] = account
        self._by_name: Mapping[str, Account] = MappingProxyType(dict(sorted(by_name.items())))

    @classmethod
    def from_file(cls, path: str) -> Accounts:
        """Profiles from a TOML file of `[accounts.NAME]` tables.

        The file must be a regular file owned by the user mailcheck runs as,
        which no other user can read or write (chmod 600). A symlink is
        followed, and the file it leads to is judged.
        """
        document = _load_toml(path)
        unknown = sorted(set(document) - {"accounts"})
        if unknown:
            raise InputError(
                f"{path}: unknown top-level key {unknown[0]!r}; "
                "give each test account as an [accounts.NAME] table"
            )
        tables = document.get("accounts", {})
        if not isinstance(tables, dict):
            raise InputError(f"{path}: 'accounts' must be tables: [accounts.NAME]")
        accounts = []
        for name, table in tables.items():
            where = f"{path}: test account {_show(name)}"
            if not isinstance(table, dict):
                raise InputError(f"{where}: must be a table, [accounts.{name}]")
            for key in table:
                if key not in _KEYS:
                    raise InputError(
                        f"{where}: {key!r} is not a test account setting "
                        f"(known: {', '.join(_KEYS)})"
                    )
            for key in ("address", "password"):
                if key not in table:
                    raise InputError(f"{where}: {key} is missing")
            accounts.append(_build(where, name, table, lambda key: key))
        return _collect(path, accounts)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Accounts:
        """Profiles from `MAILCHECK_ACCOUNT_<NAME>_ADDRESS`, `_PASSWORD`, `_USERNAME`,
        `_SMTP`, `_IMAP`, `_DOMAINS` (comma-separated) and `_TLS_VERIFY` (true or
        false) (NAME upper-cased in the variable; the profile's name is its lower
        case). An empty variable counts as unset. Passwords are taken as they are;
        other values are stripped of surrounding spaces.
        """
        profiles: dict[str, dict[str, Any]] = {}
        for variable, value in env.items():
            if not variable.startswith(ENV_PREFIX):
                continue
            rest = variable.removeprefix(ENV_PREFIX)
            key = next((k.upper() for k in _KEYS if rest.endswith("_" + k.upper())), "")
            name = rest.removesuffix("_" + key) if key else ""
            if not name:
                raise InputError(
                    f"{variable} is not a test account setting; expected "
                    f"{ENV_PREFIX}<NAME>_ADDRESS, _PASSWORD, _USERNAME, _SMTP, _IMAP, "
                    "_DOMAINS or _TLS_VERIFY"
                )
            value = value if key == "PASSWORD" else value.strip()
            if value:
                profile = profiles.setdefault(name.lower(), {})
                if key.lower() in profile:
                    raise InputError(
                        f"{variable}: test account {_show(name.lower())} has its "
                        f"{key.lower()} set twice (names are case-insensitive)"
                    )
                profile[key.lower()] = _env_value(variable, key, value)
        accounts = []
        for name, values in sorted(profiles.items()):

            def env_name(key: str, name: str = name) -> str:
                if key == "name":
                    return f"the name in {ENV_PREFIX}{name.upper()}_*:"
                return f"{ENV_PREFIX}{name.upper()}_{key.upper()}"

            where = f"test account {_show(name)}"
            for key in ("address", "password"):
                if key not in values:
                    raise InputError(f"{where}: {env_name(key)} is not set")
            accounts.append(_build(where, name, values, env_name))
        return _collect("the environment", accounts)

    def merged(self, other: Accounts) -> Accounts:
        """These profiles and `other`'s; where both define a name, `other`'s profile
        wins, whole (a profile is never assembled key by key from two places).

        `Accounts.from_file(path).merged(Accounts.from_env(env))`: the environment
        wins over the file.
        """
        return Accounts({**self._by_name, **other._by_name}.values())

    def for_domain(self, name: str, domain: str) -> Account:
        """The profile named `name`, if it may be used for a check of `domain`;
        InputError (no such account, or not for that domain) otherwise."""
        account = self.get(name)
        account.refuse_unless_serves(domain)
        return account

    def get(self, name: str) -> Account:
        """The profile named `name` (any case); InputError naming the known profiles if none."""
        account = self._by_name.get(name.lower())
        if account is None:
            known = f"known: {', '.join(self._by_name)}" if self._by_name else "none are configured"
            raise InputError(f"no test account named {_show(name)} ({known})")
        return account

    def secrets(self) -> Redactor:
        """A redactor for every profile's password, in every form a client sends it."""
        return Redactor(self._by_name.values())

    # -- the read-only mapping ----------------------------------------------------------
    def __getitem__(self, name: str) -> Account:
        return self._by_name[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._by_name

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def keys(self) -> Iterable[str]:
        return self._by_name.keys()

    def values(self) -> Iterable[Account]:
        return self._by_name.values()

    def items(self) -> Iterable[tuple[str, Account]]:
        return self._by_name.items()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Accounts) and dict(self._by_name) == dict(other._by_name)

    def __repr__(self) -> str:
        return f"Accounts({list(self._by_name)!r})"


def _build(
    where: str, name: str, values: Mapping[str, Any], key_name: Callable[[str], str]
) -> Account:
    """An Account from loaded values; an AccountError is re-raised naming the source."""
    try:
        return Account(
            name=name,
            address=values["address"],
            username=values.get("username", ""),
            password=values["password"],
            smtp=values.get("smtp"),
            imap=values.get("imap"),
            domains=values.get("domains", ()),
            tls_verify=values.get("tls_verify", True),
        )
    except AccountError as exc:
        raise InputError(f"{where}: {key_name(exc.key)} {exc.problem}") from None


def _env_value(variable: str, key: str, value: str) -> Any:
    if key == "DOMAINS":
        return [d.strip() for d in value.split(",") if d.strip()]
    if key == "TLS_VERIFY":
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise InputError(f"{variable} must be true or false, not {_show(value)}")
        return value.lower() in ("true", "1", "yes")
    return value


def _collect(source: str, accounts: list[Account]) -> Accounts:
    try:
        return Accounts(accounts)
    except InputError as exc:
        raise InputError(f"{source}: {exc} (names are case-insensitive)") from None


def _load_toml(path: str) -> dict[str, Any]:
    """The file's TOML, after checking that only its owner can touch it."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)  # a FIFO must not block
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise InputError(f"test accounts file {path!r} does not exist") from None
    except OSError as exc:
        raise InputError(f"test accounts file {path!r} cannot be opened: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"test accounts file {path!r} is not a regular file")
        if st.st_uid != os.geteuid():
            raise InputError(
                f"test accounts file {path!r} is owned by uid {st.st_uid}, not by the user "
                f"mailcheck runs as (uid {os.geteuid()}); it holds passwords"
            )
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise InputError(
                f"test accounts file {path!r} has mode {mode:04o}: other users can "
                f"{'read or write' if mode & 0o066 else 'use'} it, and it holds passwords; "
                f"chmod 600 {path}"
            )
        if st.st_size > _MAX_FILE:
            raise InputError(f"test accounts file {path!r} is larger than {_MAX_FILE} bytes")
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    import tomllib  # only an operator with a file pays for its parser

    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"test accounts file {path!r} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message may quote a character of the file (of a password): keep
        # only where the problem is.
        at = re.search(r"\((at line \d+, column \d+|at end of document)\)", str(exc))
        position = f" ({at.group(1)})" if at else ""
        raise InputError(f"test accounts file {path!r} is not valid TOML{position}") from None


def _show(text: object, limit: int = 40) -> str:
    """Quote a non-secret value for a message, bounded and with controls made visible."""
    shown = visible(text) if isinstance(text, str) else type(text).__name__
    return repr(shown if len(shown) <= limit else shown[:limit] + "…")


# -- what clients send --------------------------------------------------------------------


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def plain_blob(username: str, password: str) -> str:
    """The AUTH PLAIN (RFC 4616) response: base64 of `\\0username\\0password`, UTF-8."""
    return _b64(f"\0{username}\0{password}")


def login_blobs(username: str, password: str) -> tuple[str, str]:
    """The two AUTH LOGIN responses: base64 of the username, base64 of the password."""
    return _b64(username), _b64(password)


def imap_quoted(text: str) -> str:
    """`text` as an IMAP quoted string (RFC 3501): in double quotes, `\\` and `"` escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- redaction ----------------------------------------------------------------------------


class Redactor:
    """Replaces every known form of some secrets by "[redacted]".

    Give it Account objects, (username, password) pairs, or bare secrets (str:
    a token, say). For each secret it knows the text itself; its escaped forms
    (IMAP quoted string, JSON and Python string escapes); base64 of it, of the
    AUTH PLAIN responses `\\0user\\0secret` and `user\\0user\\0secret`, and of the
    username (the first AUTH LOGIN response) for each username paired with it;
    each base64 form with and without `=` padding. Text is UTF-8 before base64.

    Matching is case-sensitive. Where forms overlap, the union of their spans is
    blanked (longest match at each position), so no part of any form survives.
    Redact before truncating: a cut-off form is no longer recognised.
    """

    def __init__(self, secrets: Iterable[Account | tuple[str, str] | str]) -> None:
        forms: set[str] = set()
        for item in secrets:
            if isinstance(item, Account):
                username, secret = item.username, item.password
            elif isinstance(item, tuple):
                username, secret = item
            else:
                username, secret = None, item
            if secret:
                forms |= _forms(username, secret)
        forms.discard("")
        self._forms = frozenset(forms)
        ordered = sorted(self._forms, key=lambda form: (-len(form), form))
        # A lookahead finds matches at every position, overlapping ones included.
        self._pattern = (
            re.compile("(?=(" + "|".join(map(re.escape, ordered)) + "))") if ordered else None
        )

    def forms(self) -> frozenset[str]:
        return self._forms

    def __bool__(self) -> bool:
        return bool(self._forms)

    def __repr__(self) -> str:
        return f"Redactor(<{len(self._forms)} forms>)"

    def __call__(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        spans: list[list[int]] = []
        for m in self._pattern.finditer(text):
            start, end = m.start(), m.end(1)
            if spans and start <= spans[-1][1]:
                spans[-1][1] = max(spans[-1][1], end)
            else:
                spans.append([start, end])
        if not spans:
            return text
        out, last = [], 0
        for start, end in spans:
            out += [text[last:start], REDACTED]
            last = end
        out.append(text[last:])
        return "".join(out)

    def deep(self, value: Any) -> Any:
        """`value` with every string in it redacted, through dicts (keys too), lists and
        tuples; other values as they are. Returns new containers."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {self.deep(k): self.deep(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.deep(v) for v in value]
        if isinstance(value, tuple):
            items = [self.deep(v) for v in value]
            return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
        return value

    def log_filter(self) -> logging.Filter:
        """A filter that redacts each record: the message formatted with its arguments
        (arguments cleared after), the exception traceback (kept as text only: exc_info
        is dropped so no handler can render the original), the stack, and any `extra`.

        Add it to every handler (a logger's filters skip records from its children).
        """
        return _RedactingFilter(self)


_STANDARD_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
}


class _RedactingFilter(logging.Filter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        redact = self.redact
        try:
            message = record.getMessage()
        except Exception:  # a bad format: keep what there is to see, redacted
            message = f"{record.msg!s} {record.args!r}"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD_RECORD_ATTRS:
                setattr(record, key, redact.deep(value))
        return True


def _forms(username: str | None, secret: str) -> set[str]:
    texts = {
        secret,
        imap_quoted(secret),
        imap_quoted(secret)[1:-1],
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],
    }
    encoded = [_b64(secret)]
    if username is not None:
        encoded += [
            plain_blob(username, secret),
            _b64(f"{username}\0{username}\0{secret}"),
            _b64(username),
        ]
    return texts | set(encoded) | {blob.rstrip("=") for blob in encoded}
