"""Client autoconfiguration: the documents mail clients fetch to set themselves up.

Pure parsers, no network: each takes the body a server sent (bytes) and the
address being set up, and returns the settings a client would take from it.

- `parse_autoconfig`: Thunderbird's `config-v1.1.xml` (autoconfig, ISPDB).
- `autodiscover_request` / `parse_autodiscover`: Outlook's POX autodiscover,
  the 2006 schemas (settings, `redirectAddr`, `redirectUrl`, `Error`).
- `parse_mobileconfig`: Apple configuration profiles (`.mobileconfig`), XML or
  binary plists, bare or wrapped in CMS SignedData.

A document no client could use raises `ConfigError`, carrying every problem
found so all can be fixed at once; what clients tolerate but an admin should
fix comes back as `warnings`. `insecure` says when a setting exposes the mail
or the password. Nothing here raises anything else on what a server can send:
bodies over `MAX_BYTES` are refused before parsing, XML goes through
`defusedxml` (entity declarations, hence billion laughs and XXE, are refused
unread) and remote strings are quoted through `untrusted()`.

Element names are matched on their local name, case-sensitively as each format
defines them: Thunderbird's files carry no namespace, autodiscover's do, and
servers get the namespace URI's case wrong often enough that it is compared
without case.
"""

from __future__ import annotations

import ipaddress
import plistlib
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit
from xml.etree.ElementTree import Element, ParseError
from xml.sax.saxutils import escape

import defusedxml.ElementTree as SafeET
import idna
from defusedxml import DefusedXmlException, EntitiesForbidden, ExternalReferenceForbidden

from checks.core.errors import DocumentError, InputError
from checks.core.text import untrusted
from checks.rules import signeddata

MAX_BYTES = 256 * 1024  # every document here is a few KiB; servers answering more are broken
IMPLICIT_TLS_PORTS = frozenset({993, 995, 465})  # TLS from the first byte; elsewhere STARTTLS
SOCKETS = ("SSL", "STARTTLS", "plain")

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_PLACEHOLDER = re.compile(r"%[A-Za-z_]+%")
_REFUSED = (
    "refused unread: entity declarations are how billion-laughs and external-entity (XXE) "
    "attacks work, and no client configuration needs one"
)


class ConfigError(DocumentError):
    """No client could configure itself from the document; the message says why."""


@dataclass(frozen=True)
class ServerSetting:
    protocol: str  # "imap" | "pop3" | "smtp"
    hostname: str  # placeholders substituted, lower case, A-labels, no trailing dot
    port: int
    socket: str  # "SSL" | "STARTTLS" | "plain"
    username: str  # as the client fills it in for the address (made safe); "" if none
    auth: tuple[str, ...]  # Thunderbird's names: "password-cleartext", "OAuth2", "none"...

    def label(self) -> str:
        """'IMAP imap.example.com:993 SSL'."""
        return f"{self.protocol.upper()} {self.hostname}:{self.port} {self.socket}"


@dataclass(frozen=True)
class ClientConfig:
    incoming: tuple[ServerSetting, ...]  # in the document's order: the first is the default
    outgoing: tuple[ServerSetting, ...]
    warnings: tuple[str, ...] = ()  # things clients tolerate but an admin should fix
    display_name: str = ""


@dataclass(frozen=True)
class Autodiscover:
    config: ClientConfig | None  # when the response carries Account/Protocol settings
    redirect_addr: str | None = None  # Action redirectAddr: ask again for this address
    redirect_url: str | None = None  # Action redirectUrl: POST the request there
    error: str | None = None  # Response/Error, as a sentence
    warnings: tuple[str, ...] = ()  # about the response as a whole (see also config.warnings)


@dataclass(frozen=True)
class MobileConfig:
    config: ClientConfig  # from the first com.apple.mail.managed payload
    signed: bool
    signer: str | None  # subject of the signing certificate (RFC 4514), once verified
    identifier: str  # the profile's PayloadIdentifier
    warnings: tuple[str, ...] = ()  # about the profile (the mail settings' are in config)
    unverified: str | None = None  # signed, but why that proves nothing about who signed


def insecure(setting: ServerSetting) -> str | None:
    """Why this setting exposes the mail or the password (a reason, without the
    setting's label), or None.

    Only a plain socket does: SSL and STARTTLS, as clients configure them, refuse
    to go on without TLS. Over a plain socket the mail is readable whatever the
    authentication; an OAuth2 token or a challenge-response exchange is exposed
    too, and a cleartext password is handed over as is.
    """
    if setting.socket != "plain":
        return None
    if setting.auth and all(a == "none" for a in setting.auth):
        return "mail travels unencrypted (no TLS)"
    if "password-cleartext" in setting.auth:
        return "mail and password travel unencrypted (no TLS, and the password is sent as it is)"
    return "mail and password travel unencrypted (no TLS)"


# -- Thunderbird: config-v1.1.xml ----------------------------------------------------------

_TB_INCOMING = ("imap", "pop3")
_TB_AUTH = (
    "password-cleartext",
    "password-encrypted",
    "OAuth2",
    "NTLM",
    "GSSAPI",
    "TLS-client-cert",
    "client-IP-address",
    "none",
)
_TB_AUTH_SMTP = ("smtp-after-pop",)
_TB_AUTH_ALIASES = {"plain": "password-cleartext", "secure": "password-encrypted"}


def parse_autoconfig(body: bytes, email: str) -> ClientConfig:
    """A Thunderbird `config-v1.1.xml` as Thunderbird reads it for `email`.

    Placeholders (%EMAILADDRESS%, %EMAILLOCALPART%, %EMAILDOMAIN%) are filled
    in in hostnames and usernames. Server types other than imap, pop3 and smtp
    (exchange, jmap...) are skipped with a warning. The deprecated
    authentication names `plain` and `secure` come back as password-cleartext
    and password-encrypted, with a warning. Raises ConfigError if invalid, and
    InputError if `email` is not an address.
    """
    local, domain = _split_email(email)
    root = _parse_xml(body)
    if _local(root.tag) != "clientConfig":
        raise ConfigError([_wrong_root(root, "clientConfig")])
    providers = _children(root, "emailProvider")
    if not providers:
        raise ConfigError(["clientConfig has no emailProvider element"])
    problems: list[str] = []
    warnings: list[str] = []
    if len(providers) > 1:
        warnings.append(
            f"clientConfig has {len(providers)} emailProvider elements; Thunderbird reads the first"
        )
    provider = providers[0]
    domains = [d.lower().rstrip(".") for d in _texts(provider, "domain")]
    if not domains:
        warnings.append(f"emailProvider lists no domain (it should list {domain.lower()})")
    elif domain.lower().rstrip(".") not in domains:
        shown = ", ".join(f"'{untrusted(d, 60)}'" for d in domains[:5])
        more = f" and {len(domains) - 5} more" if len(domains) > 5 else ""
        warnings.append(
            f"emailProvider lists the domains {shown}{more} but not {domain.lower()}: "
            "Thunderbird uses the file anyway, but it looks copied from another provider"
        )
    values = {"%EMAILADDRESS%": email, "%EMAILLOCALPART%": local, "%EMAILDOMAIN%": domain}

    incoming: list[ServerSetting] = []
    outgoing: list[ServerSetting] = []
    candidates = {"incomingServer": 0, "outgoingServer": 0}
    for element, wanted, found in (
        ("incomingServer", _TB_INCOMING, incoming),
        ("outgoingServer", ("smtp",), outgoing),
    ):
        for number, server in enumerate(_children(provider, element), 1):
            where = f"{element} {number}"
            kind = server.get("type")
            if kind is None or kind not in wanted:
                what = "no type" if kind is None else f"type '{untrusted(kind, 30)}'"
                warnings.append(
                    f"{where}: {what} is not {' or '.join(wanted)}; skipped "
                    "(Thunderbird sets such accounts up elsewhere, if at all)"
                )
                continue
            candidates[element] += 1
            setting = _tb_server(server, kind, where, values, problems, warnings)
            if setting is not None:
                found.append(setting)
    if not candidates["incomingServer"]:
        problems.append("emailProvider has no incomingServer of type imap or pop3")
    if not candidates["outgoingServer"]:
        problems.append("emailProvider has no outgoingServer of type smtp")
    if problems:
        raise ConfigError(problems)
    return ClientConfig(
        tuple(incoming),
        tuple(outgoing),
        tuple(warnings),
        untrusted(_text(provider, "displayName") or "", 200),
    )


def _tb_server(
    server: Element,
    kind: str,
    where: str,
    values: dict[str, str],
    problems: list[str],
    warnings: list[str],
) -> ServerSetting | None:
    before = len(problems)
    raw_host = _text(server, "hostname")
    raw_port = _text(server, "port")
    raw_socket = _text(server, "socketType")
    host = port = socket = None
    if raw_host is None:
        problems.append(f"{where}: no hostname")
    else:
        host = _host_or_problem(where, "hostname", raw_host, _fill(raw_host, values), problems)
    if raw_port is None:
        problems.append(f"{where}: no port")
    else:
        port = _port(raw_port)
        if port is None:
            problems.append(f"{where}: port '{untrusted(raw_port, 60)}' is not a port number")
    if raw_socket is None:
        problems.append(f"{where}: no socketType")
    elif raw_socket in SOCKETS:
        socket = raw_socket
    else:
        case = next((s for s in SOCKETS if s.lower() == raw_socket.lower()), None)
        hint = f" (write {case}: Thunderbird reads them in this case)" if case else ""
        problems.append(
            f"{where}: socketType '{untrusted(raw_socket, 60)}' is not plain, SSL or STARTTLS{hint}"
        )

    known = _TB_AUTH + (_TB_AUTH_SMTP if kind == "smtp" else ())
    auth: list[str] = []
    for value in _texts(server, "authentication"):
        alias = _TB_AUTH_ALIASES.get(value)
        if alias:
            warnings.append(
                f"{where}: authentication '{value}' is a deprecated name for {alias}; write {alias}"
            )
            value = alias
        if value in known:
            auth.append(value)
        else:
            warnings.append(
                f"{where}: authentication '{untrusted(value, 60)}' is not a method Thunderbird "
                "knows; it tries the next one"
            )
    if not auth:
        problems.append(
            f"{where}: no authentication Thunderbird knows ({', '.join(known)}); "
            "it skips the server"
        )

    username = ""
    raw_user = _text(server, "username")
    if raw_user is not None:
        username = _fill(raw_user, values)
        left = _PLACEHOLDER.search(username)
        if left:
            warnings.append(
                f"{where}: username '{untrusted(raw_user, 60)}' keeps "
                f"'{untrusted(left.group(), 30)}', which Thunderbird does not fill in"
            )
    if len(problems) > before or host is None or port is None or socket is None:
        return None
    return ServerSetting(
        kind, host, port, socket, untrusted(username, 320), tuple(dict.fromkeys(auth))
    )


def _fill(text: str, values: dict[str, str]) -> str:
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text


# -- Outlook autodiscover (POX, 2006) ------------------------------------------------------

REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
_AD_PROTOCOLS = {"IMAP": "imap", "POP3": "pop3", "SMTP": "smtp"}
_AD_EXCHANGE = ("EXCH", "EXPR", "WEB", "EXHTTP")  # Exchange's own; not for IMAP/POP clients
_AD_ENCRYPTION = {"ssl": "SSL", "tls": "STARTTLS", "none": "plain"}
_AD_ERRORS = {
    "500": "the server does not know the address",
    "501": "the server has no settings for the address",
    "600": "the server did not understand the request",
    "601": "the server has no settings in the schema asked for",
    "602": "the server could not find the mailbox",
    "603": "the server failed to answer",
}


def autodiscover_request(email: str) -> bytes:
    """The POX body Outlook POSTs to `/autodiscover/autodiscover.xml` for `email`
    (UTF-8; the address escaped). Raises InputError if it is not an address."""
    _split_email(email)
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<Autodiscover xmlns="{REQUEST_NS}">\n'
        "  <Request>\n"
        f"    <EMailAddress>{escape(email)}</EMailAddress>\n"
        f"    <AcceptableResponseSchema>{OUTLOOK_NS}</AcceptableResponseSchema>\n"
        "  </Request>\n"
        "</Autodiscover>\n"
    ).encode()


def parse_autodiscover(body: bytes, email: str) -> Autodiscover:
    """An autodiscover response as Outlook reads it for `email`.

    Settings come back in `config` (IMAP and POP3 incoming, SMTP outgoing, in
    the document's order; EXCH, EXPR and WEB are Exchange's and skipped
    silently), a redirect in `redirect_addr` or `redirect_url`, an Error
    element in `error`. `Encryption` wins over `SSL`; `Encryption` Auto is read
    as SSL on 993, 995 and 465, STARTTLS elsewhere, with a warning. With no
    LoginName the username is the address; SPA on gives auth ("SPA",), and
    AuthRequired off gives auth ("none",) and no username. Raises ConfigError if invalid, and
    InputError if `email` is not an address.
    """
    _split_email(email)
    root = _parse_xml(body)
    if _local(root.tag) != "Autodiscover":
        raise ConfigError([_wrong_root(root, "Autodiscover")])
    namespace = _namespace(root.tag)
    if namespace.lower() == REQUEST_NS.lower():
        raise ConfigError(
            ["the body is an autodiscover request, not a response: the server echoed it back"]
        )
    warnings: list[str] = []
    if namespace.lower() != RESPONSE_NS.lower():
        warnings.append(
            f"the Autodiscover element's namespace is '{untrusted(namespace, 100)}', not "
            f"{RESPONSE_NS}: Outlook may ignore the response"
        )
    response = _child(root, "Response")
    if response is None:
        raise ConfigError(["Autodiscover has no Response element"])
    error = _child(response, "Error")
    if error is not None:
        return Autodiscover(None, error=_ad_error(error), warnings=tuple(warnings))
    account = _child(response, "Account")
    if account is None:
        raise ConfigError(["Response has neither an Account nor an Error element"])
    if _namespace(response.tag).lower() != OUTLOOK_NS.lower():
        warnings.append(
            f"the Response element's namespace is '{untrusted(_namespace(response.tag), 100)}', "
            f"not {OUTLOOK_NS}: Outlook may ignore the response"
        )
    account_type = _text(account, "AccountType")
    if account_type is not None and account_type.lower() != "email":
        warnings.append(f"AccountType is '{untrusted(account_type, 30)}', not email")

    protocols = _children(account, "Protocol")
    raw_action = _text(account, "Action")
    action = (raw_action or "").lower()
    if raw_action is None:
        if not protocols:
            raise ConfigError(["Account has no Action (settings, redirectAddr or redirectUrl)"])
        warnings.append("Account has no Action; read as settings, since it carries Protocol")
        action = "settings"
    if action == "redirectaddr":
        addr = _text(account, "RedirectAddr")
        if addr is None:
            raise ConfigError(["Action is redirectAddr but there is no RedirectAddr"])
        if not _is_email(addr):
            raise ConfigError([f"RedirectAddr '{untrusted(addr, 60)}' is not an email address"])
        if addr.lower() == email.lower():
            warnings.append("RedirectAddr is the address asked about: following it loops")
        return Autodiscover(None, redirect_addr=addr, warnings=tuple(warnings))
    if action == "redirecturl":
        url = _text(account, "RedirectUrl")
        if url is None:
            raise ConfigError(["Action is redirectUrl but there is no RedirectUrl"])
        if not _is_https_url(url):
            raise ConfigError(
                [
                    f"RedirectUrl '{untrusted(url, 60)}' is not an https URL "
                    "(Outlook follows no other)"
                ]
            )
        return Autodiscover(None, redirect_url=url, warnings=tuple(warnings))
    if action != "settings":
        raise ConfigError(
            [
                f"Action '{untrusted(raw_action or '', 30)}' is not settings, redirectAddr "
                "or redirectUrl"
            ]
        )
    user = _child(response, "User")
    name = (_text(user, "DisplayName") if user is not None else None) or ""
    config = _ad_settings(protocols, email, untrusted(name, 200))
    return Autodiscover(config, warnings=tuple(warnings))


def _ad_error(error: Element) -> str:
    code = _text(error, "ErrorCode")
    message = _text(error, "Message")
    said = f": '{untrusted(message, 120)}'" if message else ""
    if code is None:
        return f"the server answered with an Error without an ErrorCode{said}"
    meaning = _AD_ERRORS.get(code)
    return f"the server answered error {untrusted(code, 20)}{said}" + (
        f" ({meaning})" if meaning else ""
    )


def _ad_settings(protocols: list[Element], email: str, name: str) -> ClientConfig:
    problems: list[str] = []
    warnings: list[str] = []
    incoming: list[ServerSetting] = []
    outgoing: list[ServerSetting] = []
    exchange: list[str] = []
    for number, protocol in enumerate(protocols, 1):
        raw_type = _text(protocol, "Type")
        kind = (raw_type or "").upper()
        if kind in _AD_EXCHANGE:
            exchange.append(kind)
            continue
        if kind not in _AD_PROTOCOLS:
            what = "no Type" if raw_type is None else f"Type '{untrusted(raw_type, 30)}'"
            warnings.append(f"Protocol {number}: {what} is not IMAP, POP3 or SMTP; skipped")
            continue
        setting = _ad_protocol(
            protocol, f"Protocol {number} ({kind})", kind, email, problems, warnings
        )
        if setting is not None:
            (outgoing if kind == "SMTP" else incoming).append(setting)
    if not incoming and not outgoing and not problems:
        found = (
            f" (only {', '.join(dict.fromkeys(exchange))}, which are Exchange's)"
            if exchange
            else ""
        )
        problems.append(f"Action is settings but no Protocol is IMAP, POP3 or SMTP{found}")
    elif not problems and not incoming:
        problems.append(
            "Action is settings but no Protocol is IMAP or POP3: nothing to read mail with"
        )
    if problems:
        raise ConfigError(problems)
    if not outgoing:
        warnings.append("no Protocol is SMTP: Outlook gets no server to send with")
    return ClientConfig(tuple(incoming), tuple(outgoing), tuple(warnings), name)


def _ad_protocol(
    protocol: Element,
    where: str,
    kind: str,
    email: str,
    problems: list[str],
    warnings: list[str],
) -> ServerSetting | None:
    before = len(problems)
    raw_host = _text(protocol, "Server")
    raw_port = _text(protocol, "Port")
    host = port = None
    if raw_host is None:
        problems.append(f"{where}: no Server")
    else:
        host = _host_or_problem(where, "Server", raw_host, raw_host, problems)
    if raw_port is None:
        problems.append(f"{where}: no Port")
    else:
        port = _port(raw_port)
        if port is None:
            problems.append(f"{where}: Port '{untrusted(raw_port, 60)}' is not a port number")
    ssl = _on_off(protocol, "SSL", True, where, problems)
    raw_encryption = _text(protocol, "Encryption")
    socket = "SSL" if ssl else "plain"
    if raw_encryption is not None:
        encryption = raw_encryption.lower()
        if encryption in _AD_ENCRYPTION:
            socket = _AD_ENCRYPTION[encryption]
        elif encryption == "auto":
            socket = "SSL" if port in IMPLICIT_TLS_PORTS else "STARTTLS"
            if port is not None:
                warnings.append(
                    f"{where}: Encryption Auto leaves TLS to Outlook's choice; read as {socket} "
                    f"on port {port}"
                )
        else:
            problems.append(
                f"{where}: Encryption '{untrusted(raw_encryption, 60)}' is not SSL, TLS, None "
                "or Auto"
            )
    elif ssl and port is not None and port not in IMPLICIT_TLS_PORTS:
        warnings.append(
            f"{where}: SSL on with port {port}, where servers usually speak STARTTLS; "
            "if this one does, say <Encryption>TLS</Encryption>"
        )
    spa = _on_off(protocol, "SPA", False, where, problems)
    auth_required = _on_off(protocol, "AuthRequired", True, where, problems)
    login = _text(protocol, "LoginName")
    if len(problems) > before or host is None or port is None:
        return None
    auth = ("none",) if not auth_required else ("SPA",) if spa else ("password-cleartext",)
    username = "" if not auth_required else email if login is None else login
    return ServerSetting(_AD_PROTOCOLS[kind], host, port, socket, untrusted(username, 320), auth)


def _on_off(element: Element, name: str, default: bool, where: str, problems: list[str]) -> bool:
    value = _text(element, name)
    if value is None:
        return default
    if value.lower() in ("on", "off"):
        return value.lower() == "on"
    problems.append(f"{where}: {name} '{untrusted(value, 30)}' is not on or off")
    return default


def _is_https_url(url: str) -> bool:
    if len(url) > 2048 or not url.isprintable() or any(c.isspace() for c in url):
        return False
    try:
        parts = urlsplit(url)
        return parts.scheme.lower() == "https" and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a bad port or IPv6 literal
        return False


# -- Apple configuration profiles ----------------------------------------------------------

MAIL_PAYLOAD = "com.apple.mail.managed"
_APPLE_TYPES = {"EmailTypeIMAP": "imap", "EmailTypePOP": "pop3"}
_APPLE_AUTH = {
    "EmailAuthNone": "none",
    "EmailAuthPassword": "password-cleartext",
    "EmailAuthCRAMMD5": "password-encrypted",
    "EmailAuthNTLM": "NTLM",
    "EmailAuthHTTPMD5": "password-encrypted",  # HTTP Digest: a challenge-response too
}
_APPLE_DEFAULT_PORTS = {
    ("imap", True): 993,
    ("imap", False): 143,
    ("pop3", True): 995,
    ("pop3", False): 110,
}


def parse_mobileconfig(body: bytes, email: str, *, ca_file: str | None = None) -> MobileConfig:
    """An Apple configuration profile's mail account, as iOS and macOS read it.

    `body` is an XML or binary plist, or one wrapped in CMS SignedData (DER or
    BER, as Apple's tools write it, with the profile inside). For a signed
    profile `signer` is the subject of the certificate that signed, set only
    once the signature over the profile verifies and that certificate leads to
    a root in the system store or `ca_file` (`checks.rules.signeddata`); otherwise
    `signer` is None and `unverified` says why. The settings are read either
    way: a client that installs the profile anyway uses them.

    The settings come from the first com.apple.mail.managed payload.
    `…UseSSL` means TLS, which Apple starts from the first byte on 993, 995
    and 465 and with STARTTLS on any other port; without it the socket is
    plain. No port means the protocol's default for incoming mail, and for
    outgoing iOS tries 25, 587 and 465 in turn (read as 25), with a warning.
    Raises ConfigError listing every problem, and InputError if `email` is not
    an address.
    """
    _split_email(email)
    _check_size(body)
    warnings: list[str] = []
    signed = body[:1] == b"\x30"  # a DER SEQUENCE; a plist starts with "<", a BOM or "bplist"
    verdict = signeddata.Verdict(None, None)
    if signed:
        body, verdict = _unwrap_cms(body, ca_file)
        warnings.extend(verdict.notes)
    else:
        warnings.append("the profile is not signed: iOS shows it as Unverified")
    try:
        # plistlib refuses entity declarations itself (its expat handler raises
        # InvalidFileException, checked in the tests), loads no external DTD, and
        # reads shared binary-plist objects once, so bombs of either kind fail here.
        data = plistlib.loads(body)
    except Exception as exc:  # plistlib is not hardened: expat, struct, recursion errors...
        if "entity declarations" in str(exc):
            raise ConfigError([f"the profile declares XML entities; {_REFUSED}"]) from None
        raise ConfigError(
            [
                "the profile is not a property list "
                f"({untrusted(str(exc) or type(exc).__name__, 80)})"
            ]
        ) from None
    if not isinstance(data, dict):
        raise ConfigError([f"the profile's top level is {_kind(data)}, not a dictionary"])

    problems: list[str] = []
    where = "the profile"
    kind = _get(data, "PayloadType", str, where, problems)
    if kind is not None and kind != "Configuration":
        problems.append(f"the profile's PayloadType is '{untrusted(kind, 60)}', not Configuration")
    identifier = _get(data, "PayloadIdentifier", str, where, problems)
    _get(data, "PayloadUUID", str, where, problems)
    version = _get(data, "PayloadVersion", int, where, problems)
    if version is not None and version != 1:
        warnings.append(f"the profile's PayloadVersion is {version}; Apple documents only 1")
    content = _get(data, "PayloadContent", list, where, problems)
    mail: list[tuple[str, dict[str, Any]]] = []
    others: list[str] = []
    for number, item in enumerate(content or [], 1):
        if not isinstance(item, dict):
            problems.append(f"PayloadContent item {number} is {_kind(item)}, not a dictionary")
        elif item.get("PayloadType") == MAIL_PAYLOAD:
            mail.append((f"PayloadContent item {number} ({MAIL_PAYLOAD})", item))
        elif isinstance(item.get("PayloadType"), str):
            others.append(untrusted(item["PayloadType"], 60))
    if content is not None and not mail:
        found = f" (it has {', '.join(dict.fromkeys(others))})" if others else ""
        problems.append(f"PayloadContent has no {MAIL_PAYLOAD} payload{found}")
    if len(mail) > 1:
        warnings.append(f"the profile has {len(mail)} mail payloads; this check reads the first")
    config = _apple_mail(*mail[0], email, problems) if mail else None
    if problems or config is None or identifier is None:
        raise ConfigError(problems)
    return MobileConfig(
        config,
        signed,
        verdict.signer,
        untrusted(identifier, 200),
        tuple(warnings),
        verdict.unverified,
    )


def _apple_mail(
    where: str, payload: dict[str, Any], email: str, problems: list[str]
) -> ClientConfig | None:
    warnings: list[str] = []
    before = len(problems)
    _get(payload, "PayloadIdentifier", str, where, problems)
    _get(payload, "PayloadUUID", str, where, problems)
    _get(payload, "PayloadVersion", int, where, problems)
    account_type = _get(payload, "EmailAccountType", str, where, problems)
    protocol = None
    if account_type is not None:
        protocol = _APPLE_TYPES.get(account_type)
        if protocol is None:
            problems.append(
                f"{where}: EmailAccountType '{untrusted(account_type, 60)}' is not "
                "EmailTypeIMAP or EmailTypePOP"
            )
    address = _get(payload, "EmailAddress", str, where, problems, required=False)
    if address is not None and address.lower() != email.lower():
        warnings.append(
            f"EmailAddress is '{untrusted(address, 60)}', not the address checked ({email})"
        )
    incoming = _apple_server(payload, "Incoming", protocol, where, problems, warnings)
    outgoing = _apple_server(payload, "Outgoing", "smtp", where, problems, warnings)
    if len(problems) > before or incoming is None or outgoing is None:
        return None
    name = payload.get("EmailAccountDescription") or payload.get("PayloadDisplayName")
    return ClientConfig(
        (incoming,),
        (outgoing,),
        tuple(warnings),
        untrusted(name, 200) if isinstance(name, str) else "",
    )


def _apple_server(
    payload: dict[str, Any],
    direction: str,
    protocol: str | None,
    where: str,
    problems: list[str],
    warnings: list[str],
) -> ServerSetting | None:
    before = len(problems)
    key = f"{direction}MailServer"
    raw_host = _get(payload, f"{key}HostName", str, where, problems)
    host = None
    if raw_host is not None:
        host = _host_or_problem(where, f"{key}HostName", raw_host, raw_host, problems)
    use_ssl = _get(payload, f"{key}UseSSL", bool, where, problems, required=False) or False
    port = _get(payload, f"{key}PortNumber", int, where, problems, required=False)
    if port is not None and not 0 < port < 65536:
        problems.append(f"{where}: {key}PortNumber {port} is not a port number")
    elif port is None and protocol == "smtp":
        port = 25
        warnings.append(
            f"no {key}PortNumber: iOS tries 25, 587 and 465 in turn; read as 25 (set the port)"
        )
    elif port is None and protocol is not None:
        port = _APPLE_DEFAULT_PORTS[protocol, use_ssl]
        warnings.append(f"no {key}PortNumber: iOS uses the protocol's default, {port}")
    username = _get(payload, f"{key}Username", str, where, problems, required=False) or ""
    raw_auth = _get(payload, f"{key}Authentication", str, where, problems)
    auth = None
    if raw_auth is not None:
        auth = _APPLE_AUTH.get(raw_auth)
        if auth is None:
            problems.append(
                f"{where}: {key}Authentication '{untrusted(raw_auth, 60)}' is not one of "
                f"{', '.join(_APPLE_AUTH)}"
            )
    if len(problems) > before or host is None or port is None or auth is None or not protocol:
        return None
    socket = ("SSL" if port in IMPLICIT_TLS_PORTS else "STARTTLS") if use_ssl else "plain"
    return ServerSetting(protocol, host, port, socket, untrusted(username, 320), (auth,))


def _get(
    data: dict[str, Any],
    key: str,
    kind: type[Any],
    where: str,
    problems: list[str],
    *,
    required: bool = True,
) -> Any:
    """data[key] if it has the plist type wanted, else None and a problem."""
    if key not in data:
        if required:
            problems.append(f"{where} has no {key}")
        return None
    value = data[key]
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    problems.append(f"{where}: {key} is {_kind(value)}, not {_kind(kind)}")
    return None


def _kind(value: Any) -> str:
    """A plist value's type as Apple's documentation names it, with the value if short."""
    names = {bool: "a boolean", int: "an integer", float: "a real number", str: "a string"}
    names |= {list: "an array", dict: "a dictionary", bytes: "data"}
    if isinstance(value, type):
        return names.get(value, value.__name__)
    name = next((n for t, n in names.items() if isinstance(value, t)), "a date")
    if isinstance(value, str):
        return f"{name} ('{untrusted(value, 40)}')"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{name} ({value})"
    return name


def _unwrap_cms(body: bytes, ca_file: str | None) -> tuple[bytes, signeddata.Verdict]:
    """(the profile inside a CMS SignedData, who signed it if that verifies).

    asn1crypto reads BER as well as DER: Apple's CMSEncoder writes indefinite
    lengths and the content as a chunked OCTET STRING, which a minimal DER
    walker would refuse. Imported here: most profiles are not signed."""
    from asn1crypto import cms  # type: ignore[import-untyped]  # no stubs, no py.typed

    try:
        info = cms.ContentInfo.load(body)
        content_type = info["content_type"].native
        if content_type != "signed_data":
            raise ConfigError(
                [
                    f"the profile is a CMS {untrusted(str(content_type), 40)} structure, "
                    "not SignedData around a property list"
                ]
            )
        signed_data = info["content"]
        content = signed_data["encap_content_info"]["content"]
        inner = None if content.native is None else bytes(content)
    except ConfigError:
        raise
    except Exception as exc:  # asn1crypto parses lazily: anything odd surfaces on access
        raise ConfigError(
            [
                "the profile starts like a signed profile (CMS) but is not one "
                f"({untrusted(str(exc) or type(exc).__name__, 80)})"
            ]
        ) from None
    if inner is None:
        raise ConfigError(["the signed profile does not carry the profile (a detached signature)"])
    return inner, signeddata.verify(signed_data, inner, ca_file)


# -- shared ----------------------------------------------------------------------------------


def _check_size(body: bytes) -> None:
    if len(body) > MAX_BYTES:
        raise ConfigError(
            [
                f"the document is {len(body)} bytes; client configurations are a few KiB and this "
                f"check reads at most {MAX_BYTES}"
            ]
        )
    if not body.strip():
        raise ConfigError(["the document is empty"])


def _parse_xml(body: bytes) -> Element:
    """The root element; ConfigError for no XML, or XML declaring entities."""
    _check_size(body)
    try:
        return SafeET.fromstring(body)
    except EntitiesForbidden as exc:
        target = f" (pointing at '{untrusted(exc.sysid, 60)}')" if exc.sysid else ""
        raise ConfigError(
            [
                f"the document declares the XML entity '{untrusted(exc.name, 40)}'{target}; "
                + _REFUSED
            ]
        ) from None
    except ExternalReferenceForbidden as exc:
        raise ConfigError(
            [
                f"the document refers to the external resource '{untrusted(exc.sysid or '', 60)}'; "
                "refused unread"
            ]
        ) from None
    except DefusedXmlException as exc:
        raise ConfigError([f"the document was refused ({untrusted(str(exc), 80)})"]) from None
    except LookupError as exc:  # an encoding declaration naming no codec Python has
        raise ConfigError(
            [f"the document's XML declaration names an {untrusted(str(exc), 80)}"]
        ) from None
    except (ParseError, ValueError) as exc:  # ValueError: bytes the declared codec refuses
        raise ConfigError([f"the document is not XML ({untrusted(str(exc), 80)})"]) from None


def _wrong_root(root: Element, wanted: str) -> str:
    name = untrusted(_local(root.tag), 40)
    hint = " (an HTML page, not the file)" if name.lower() == "html" else ""
    return f"the root element is '{name}', not {wanted}{hint}"


def _local(tag: object) -> str:
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def _namespace(tag: object) -> str:
    return tag[1:].partition("}")[0] if isinstance(tag, str) and tag.startswith("{") else ""


def _children(element: Element, name: str) -> list[Element]:
    return [child for child in element if _local(child.tag) == name]


def _child(element: Element, name: str) -> Element | None:
    return next((child for child in element if _local(child.tag) == name), None)


def _text(element: Element, name: str) -> str | None:
    """The stripped text of the first child called name; None if absent or empty."""
    child = _child(element, name)
    text = (child.text or "").strip() if child is not None else ""
    return text or None


def _texts(element: Element, name: str) -> list[str]:
    return [t for child in _children(element, name) if (t := (child.text or "").strip())]


def _port(text: str) -> int | None:
    if text.isascii() and text.isdigit() and len(text) <= 5 and 0 < int(text) < 65536:
        return int(text)
    return None


def _host(text: str) -> str | None:
    """A host name in lower case A-labels without the root dot, or an IP address."""
    name = text.strip().lower().removesuffix(".")
    try:
        return str(ipaddress.ip_address(name.removeprefix("[").removesuffix("]")))
    except ValueError:
        pass
    if not name.isascii():
        try:
            name = idna.encode(name, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError):
            return None
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        return None
    return name


def _host_or_problem(
    where: str, element: str, raw: str, filled: str, problems: list[str]
) -> str | None:
    host = _host(filled)
    if host is None:
        after = f" ('{untrusted(filled, 60)}' once filled in)" if filled != raw else ""
        problems.append(f"{where}: {element} '{untrusted(raw, 60)}'{after} is not a host name")
    return host


def _is_email(text: str) -> bool:
    local, at, domain = text.rpartition("@")
    return (
        bool(at and local)
        and not any(c.isspace() or not c.isprintable() for c in local)
        and len(text) <= 320
        and _host(domain) is not None
        and not domain.startswith("[")
    )


def _split_email(email: str) -> tuple[str, str]:
    """(local part, domain) of the address being set up; InputError if it is none."""
    if not _is_email(email):
        raise InputError(f"'{untrusted(email, 60)}' is not an email address")
    local, _at, domain = email.rpartition("@")
    return local, domain
