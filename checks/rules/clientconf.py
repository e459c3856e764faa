"""Client autoconfiguration: the documents mail clients fetch to set themselves up.

Pure parsers, no network, one module per client: each takes the body a server
sent (bytes) and the address being set up, and returns the settings a client
would take from it. This module holds what they share: the values
(`ServerSetting`, `ClientConfig`, `Autodiscover`, `MobileConfig`), `insecure`,
and the bounded, defused XML reading.

- `thunderbird.parse_autoconfig`: Thunderbird's `config-v1.1.xml` (autoconfig, ISPDB).
- `outlook.autodiscover_request` / `outlook.parse_autodiscover`: Outlook's POX
  autodiscover, the 2006 schemas (settings, `redirectAddr`, `redirectUrl`, `Error`).
- `apple.parse_mobileconfig`: Apple configuration profiles (`.mobileconfig`),
  XML or binary plists, bare or wrapped in CMS SignedData.

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
import re
from dataclasses import dataclass
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeET
import idna
from defusedxml import DefusedXmlException, EntitiesForbidden, ExternalReferenceForbidden

from checks.core.errors import DocumentError, InputError
from checks.core.text import untrusted

MAX_BYTES = 256 * 1024  # every document here is a few KiB; servers answering more are broken
IMPLICIT_TLS_PORTS = frozenset({993, 995, 465})  # TLS from the first byte; elsewhere STARTTLS
SOCKETS = ("SSL", "STARTTLS", "plain")

REFUSED_ENTITIES = (
    "refused unread: entity declarations are how billion-laughs and external-entity (XXE) "
    "attacks work, and no client configuration needs one"
)

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


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


# -- Outlook autodiscover (POX, 2006) ------------------------------------------------------


# -- Apple configuration profiles ----------------------------------------------------------


# -- shared ----------------------------------------------------------------------------------


def check_size(body: bytes) -> None:
    if len(body) > MAX_BYTES:
        raise ConfigError(
            [
                f"the document is {len(body)} bytes; client configurations are a few KiB and this "
                f"check reads at most {MAX_BYTES}"
            ]
        )
    if not body.strip():
        raise ConfigError(["the document is empty"])


def parse_xml(body: bytes) -> Element:
    """The root element; ConfigError for no XML, or XML declaring entities."""
    check_size(body)
    try:
        return SafeET.fromstring(body)
    except EntitiesForbidden as exc:
        target = f" (pointing at '{untrusted(exc.sysid, 60)}')" if exc.sysid else ""
        raise ConfigError(
            [
                f"the document declares the XML entity '{untrusted(exc.name, 40)}'{target}; "
                + REFUSED_ENTITIES
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


def wrong_root(root: Element, wanted: str) -> str:
    name = untrusted(local_name(root.tag), 40)
    hint = " (an HTML page, not the file)" if name.lower() == "html" else ""
    return f"the root element is '{name}', not {wanted}{hint}"


def local_name(tag: object) -> str:
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def namespace_of(tag: object) -> str:
    return tag[1:].partition("}")[0] if isinstance(tag, str) and tag.startswith("{") else ""


def xml_children(element: Element, name: str) -> list[Element]:
    return [child for child in element if local_name(child.tag) == name]


def xml_child(element: Element, name: str) -> Element | None:
    return next((child for child in element if local_name(child.tag) == name), None)


def xml_text(element: Element, name: str) -> str | None:
    """The stripped text of the first child called name; None if absent or empty."""
    child = xml_child(element, name)
    text = (child.text or "").strip() if child is not None else ""
    return text or None


def xml_texts(element: Element, name: str) -> list[str]:
    return [t for child in xml_children(element, name) if (t := (child.text or "").strip())]


def parse_port(text: str) -> int | None:
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


def host_or_problem(
    where: str, element: str, raw: str, filled: str, problems: list[str]
) -> str | None:
    host = _host(filled)
    if host is None:
        after = f" ('{untrusted(filled, 60)}' once filled in)" if filled != raw else ""
        problems.append(f"{where}: {element} '{untrusted(raw, 60)}'{after} is not a host name")
    return host


def is_email(text: str) -> bool:
    local, at, domain = text.rpartition("@")
    return (
        bool(at and local)
        and not any(c.isspace() or not c.isprintable() for c in local)
        and len(text) <= 320
        and _host(domain) is not None
        and not domain.startswith("[")
    )


def split_email(email: str) -> tuple[str, str]:
    """(local part, domain) of the address being set up; InputError if it is none."""
    if not is_email(email):
        raise InputError(f"'{untrusted(email, 60)}' is not an email address")
    local, _at, domain = email.rpartition("@")
    return local, domain
