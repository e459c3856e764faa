"""Outlook's POX autodiscover, the 2006 schemas: `autodiscover_request` is the
POST body Outlook sends, `parse_autodiscover` reads the answer (settings,
`redirectAddr`, `redirectUrl`, `Error`). Shared values and XML helpers:
checks.rules.clientconf.
"""

from __future__ import annotations

from urllib.parse import urlsplit
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape

from checks.core.text import untrusted
from checks.rules.clientconf import (
    IMPLICIT_TLS_PORTS,
    Autodiscover,
    ClientConfig,
    ConfigError,
    ServerSetting,
    host_or_problem,
    is_email,
    local_name,
    namespace_of,
    parse_port,
    parse_xml,
    split_email,
    wrong_root,
    xml_child,
    xml_children,
    xml_text,
)

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
    split_email(email)
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
    split_email(email)
    root = parse_xml(body)
    if local_name(root.tag) != "Autodiscover":
        raise ConfigError([wrong_root(root, "Autodiscover")])
    namespace = namespace_of(root.tag)
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
    response = xml_child(root, "Response")
    if response is None:
        raise ConfigError(["Autodiscover has no Response element"])
    error = xml_child(response, "Error")
    if error is not None:
        return Autodiscover(None, error=_ad_error(error), warnings=tuple(warnings))
    account = xml_child(response, "Account")
    if account is None:
        raise ConfigError(["Response has neither an Account nor an Error element"])
    if namespace_of(response.tag).lower() != OUTLOOK_NS.lower():
        warnings.append(
            f"the Response element's namespace is '{untrusted(namespace_of(response.tag), 100)}', "
            f"not {OUTLOOK_NS}: Outlook may ignore the response"
        )
    account_type = xml_text(account, "AccountType")
    if account_type is not None and account_type.lower() != "email":
        warnings.append(f"AccountType is '{untrusted(account_type, 30)}', not email")

    protocols = xml_children(account, "Protocol")
    raw_action = xml_text(account, "Action")
    action = (raw_action or "").lower()
    if raw_action is None:
        if not protocols:
            raise ConfigError(["Account has no Action (settings, redirectAddr or redirectUrl)"])
        warnings.append("Account has no Action; read as settings, since it carries Protocol")
        action = "settings"
    if action == "redirectaddr":
        addr = xml_text(account, "RedirectAddr")
        if addr is None:
            raise ConfigError(["Action is redirectAddr but there is no RedirectAddr"])
        if not is_email(addr):
            raise ConfigError([f"RedirectAddr '{untrusted(addr, 60)}' is not an email address"])
        if addr.lower() == email.lower():
            warnings.append("RedirectAddr is the address asked about: following it loops")
        return Autodiscover(None, redirect_addr=addr, warnings=tuple(warnings))
    if action == "redirecturl":
        url = xml_text(account, "RedirectUrl")
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
    user = xml_child(response, "User")
    name = (xml_text(user, "DisplayName") if user is not None else None) or ""
    config = _ad_settings(protocols, email, untrusted(name, 200))
    return Autodiscover(config, warnings=tuple(warnings))


def _ad_error(error: Element) -> str:
    code = xml_text(error, "ErrorCode")
    message = xml_text(error, "Message")
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
        raw_type = xml_text(protocol, "Type")
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
    raw_host = xml_text(protocol, "Server")
    raw_port = xml_text(protocol, "Port")
    host = port = None
    if raw_host is None:
        problems.append(f"{where}: no Server")
    else:
        host = host_or_problem(where, "Server", raw_host, raw_host, problems)
    if raw_port is None:
        problems.append(f"{where}: no Port")
    else:
        port = parse_port(raw_port)
        if port is None:
            problems.append(f"{where}: Port '{untrusted(raw_port, 60)}' is not a port number")
    ssl = _on_off(protocol, "SSL", True, where, problems)
    raw_encryption = xml_text(protocol, "Encryption")
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
    login = xml_text(protocol, "LoginName")
    if len(problems) > before or host is None or port is None:
        return None
    auth = ("none",) if not auth_required else ("SPA",) if spa else ("password-cleartext",)
    username = "" if not auth_required else email if login is None else login
    return ServerSetting(_AD_PROTOCOLS[kind], host, port, socket, untrusted(username, 320), auth)


def _on_off(element: Element, name: str, default: bool, where: str, problems: list[str]) -> bool:
    value = xml_text(element, name)
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
