"""Apple configuration profiles (`.mobileconfig`): `parse_mobileconfig` reads
the mail payloads of an XML or binary plist, bare or wrapped in CMS
SignedData (checked by checks.rules.signeddata). Shared values and helpers:
checks.rules.clientconf.
"""

from __future__ import annotations

import plistlib
from typing import Any

from checks.core.text import untrusted
from checks.rules import signeddata
from checks.rules.clientconf import (
    IMPLICIT_TLS_PORTS,
    REFUSED_ENTITIES,
    ClientConfig,
    ConfigError,
    MobileConfig,
    ServerSetting,
    check_size,
    host_or_problem,
    split_email,
)

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
    split_email(email)
    check_size(body)
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
            raise ConfigError([f"the profile declares XML entities; {REFUSED_ENTITIES}"]) from None
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
        host = host_or_problem(where, f"{key}HostName", raw_host, raw_host, problems)
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
