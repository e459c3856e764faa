"""Documents mail clients fetch, as the lab's nginx serves them: Thunderbird's
config-v1.1.xml, Outlook's POX autodiscover responses and Apple profiles.

Servers are (protocol, host, port, socketType) tuples; the scenarios using
these live in tests/lab/zones.py.
"""

from __future__ import annotations

import plistlib
import uuid
from xml.sax.saxutils import escape

Server = tuple[str, str, int, str]

HEALTHY_IN: tuple[Server, ...] = (
    ("imap", "imap.healthy.test", 993, "SSL"),
    ("imap", "imap.healthy.test", 143, "STARTTLS"),
    ("pop3", "imap.healthy.test", 995, "SSL"),
)
HEALTHY_OUT: tuple[Server, ...] = (
    ("smtp", "smtp.healthy.test", 465, "SSL"),
    ("smtp", "smtp.healthy.test", 587, "STARTTLS"),
)
AUTOCONFIG_PATH = "/mail/config-v1.1.xml"
AUTODISCOVER_PATH = "/autodiscover/autodiscover.xml"


def autoconfig_xml(
    domain: str,
    incoming: tuple[Server, ...] = HEALTHY_IN,
    outgoing: tuple[Server, ...] = HEALTHY_OUT,
    auth: str = "password-cleartext",
) -> str:
    def server(kind: str, s: Server) -> str:
        protocol, host, port, socket = s
        return (
            f'    <{kind} type="{protocol}">\n'
            f"      <hostname>{host}</hostname>\n"
            f"      <port>{port}</port>\n"
            f"      <socketType>{socket}</socketType>\n"
            "      <username>%EMAILADDRESS%</username>\n"
            f"      <authentication>{auth}</authentication>\n"
            f"    </{kind}>\n"
        )

    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<clientConfig version="1.1">\n'
        f'  <emailProvider id="{domain}">\n'
        f"    <domain>{domain}</domain>\n"
        f"    <displayName>{domain} mail (lab)</displayName>\n"
        + "".join(server("incomingServer", s) for s in incoming)
        + "".join(server("outgoingServer", s) for s in outgoing)
        + "  </emailProvider>\n</clientConfig>\n"
    )


_RESPONSE = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">\n'
    '  <Response xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/'
    'responseschema/2006a">\n'
    "    <Account>\n"
    "      <AccountType>email</AccountType>\n"
    "{body}"
    "    </Account>\n"
    "  </Response>\n"
    "</Autodiscover>\n"
)


def autodiscover_xml(servers: tuple[Server, ...] = (HEALTHY_IN[0], HEALTHY_OUT[0])) -> str:
    protocols = "".join(
        "      <Protocol>\n"
        f"        <Type>{protocol.upper()}</Type>\n"
        f"        <Server>{host}</Server>\n"
        f"        <Port>{port}</Port>\n"
        "        <SPA>off</SPA>\n"
        f"        <SSL>{'on' if socket != 'plain' else 'off'}</SSL>\n"
        f"        <Encryption>{'SSL' if socket == 'SSL' else 'TLS'}</Encryption>\n"
        "        <AuthRequired>on</AuthRequired>\n"
        "      </Protocol>\n"
        for protocol, host, port, socket in servers
    )
    return _RESPONSE.format(body="      <Action>settings</Action>\n" + protocols)


def autodiscover_redirect_url(url: str) -> str:
    return _RESPONSE.format(
        body=f"      <Action>redirectUrl</Action>\n      <RedirectUrl>{escape(url)}</RedirectUrl>\n"
    )


def autodiscover_redirect_addr(address: str) -> str:
    return _RESPONSE.format(
        body=f"      <Action>redirectAddr</Action>\n"
        f"      <RedirectAddr>{escape(address)}</RedirectAddr>\n"
    )


def mobileconfig(domain: str, *, imap_port: int = 993, smtp_port: int = 465) -> str:
    """An unsigned XML profile with one IMAP account on the healthy servers."""
    mail = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"test.{domain}.mail",
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"mail.{domain}")).upper(),
        "PayloadDisplayName": f"{domain} mail",
        "EmailAccountType": "EmailTypeIMAP",
        "EmailAccountDescription": f"{domain} (lab)",
        "IncomingMailServerHostName": "imap.healthy.test",
        "IncomingMailServerPortNumber": imap_port,
        "IncomingMailServerUseSSL": True,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "IncomingMailServerUsername": f"user@{domain}",
        "OutgoingMailServerHostName": "smtp.healthy.test",
        "OutgoingMailServerPortNumber": smtp_port,
        "OutgoingMailServerUseSSL": True,
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerUsername": f"user@{domain}",
    }
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"test.{domain}",
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, domain)).upper(),
        "PayloadDisplayName": f"{domain} mail",
        "PayloadContent": [mail],
    }
    return plistlib.dumps(profile).decode()
