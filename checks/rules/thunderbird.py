"""Thunderbird's `config-v1.1.xml` (autoconfig at the domain and the ISPDB):
`parse_autoconfig` reads it as Thunderbird does, placeholders filled in for
the address being set up. Shared values and XML helpers: checks.rules.clientconf.
"""

from __future__ import annotations

import re
from xml.etree.ElementTree import Element

from checks.core.text import untrusted
from checks.rules.clientconf import (
    SOCKETS,
    ClientConfig,
    ConfigError,
    ServerSetting,
    host_or_problem,
    local_name,
    parse_port,
    parse_xml,
    split_email,
    wrong_root,
    xml_children,
    xml_text,
    xml_texts,
)

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
    local, domain = split_email(email)
    root = parse_xml(body)
    if local_name(root.tag) != "clientConfig":
        raise ConfigError([wrong_root(root, "clientConfig")])
    providers = xml_children(root, "emailProvider")
    if not providers:
        raise ConfigError(["clientConfig has no emailProvider element"])
    problems: list[str] = []
    warnings: list[str] = []
    if len(providers) > 1:
        warnings.append(
            f"clientConfig has {len(providers)} emailProvider elements; Thunderbird reads the first"
        )
    provider = providers[0]
    domains = [d.lower().rstrip(".") for d in xml_texts(provider, "domain")]
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
        for number, server in enumerate(xml_children(provider, element), 1):
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
        untrusted(xml_text(provider, "displayName") or "", 200),
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
    raw_host = xml_text(server, "hostname")
    raw_port = xml_text(server, "port")
    raw_socket = xml_text(server, "socketType")
    host = port = socket = None
    if raw_host is None:
        problems.append(f"{where}: no hostname")
    else:
        host = host_or_problem(where, "hostname", raw_host, _fill(raw_host, values), problems)
    if raw_port is None:
        problems.append(f"{where}: no port")
    else:
        port = parse_port(raw_port)
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
    for value in xml_texts(server, "authentication"):
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
    raw_user = xml_text(server, "username")
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


_PLACEHOLDER = re.compile(r"%[A-Za-z_]+%")
