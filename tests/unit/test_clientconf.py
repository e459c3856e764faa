"""Client autoconfiguration documents: Thunderbird, Outlook autodiscover, Apple profiles."""

from __future__ import annotations

import datetime
import plistlib
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import pytest
from asn1crypto import cms  # type: ignore[import-untyped]  # no stubs, no py.typed
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from checks.core.errors import InputError, MailcheckError
from checks.rules.apple import parse_mobileconfig
from checks.rules.clientconf import (
    MAX_BYTES,
    Autodiscover,
    ClientConfig,
    ConfigError,
    MobileConfig,
    ServerSetting,
    insecure,
)
from checks.rules.outlook import OUTLOOK_NS, REQUEST_NS, autodiscover_request, parse_autodiscover
from checks.rules.signeddata import MAX_CERTIFICATES
from checks.rules.thunderbird import parse_autoconfig
from tests.lab.pki import CertSpec, LabPKI

EMAIL = "Jane.Doe@Example.com"
REFUSED = (
    "refused unread: entity declarations are how billion-laughs and external-entity (XXE) "
    "attacks work, and no client configuration needs one"
)


def problems(
    parse: Callable[[bytes, str], object], body: bytes, email: str = EMAIL
) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as info:
        parse(body, email)
    assert str(info.value) == "; ".join(info.value.problems)
    return info.value.problems


# -- Thunderbird ------------------------------------------------------------------------------

ISPDB = b"""<?xml version="1.0" encoding="UTF-8"?>
<clientConfig version="1.1">
  <emailProvider id="example.com">
    <domain>example.com</domain>
    <domain>example.net</domain>
    <displayName>Example Mail</displayName>
    <displayShortName>Example</displayShortName>
    <incomingServer type="imap">
      <hostname>imap.%EMAILDOMAIN%</hostname>
      <port>993</port>
      <socketType>SSL</socketType>
      <username>%EMAILADDRESS%</username>
      <authentication>OAuth2</authentication>
      <authentication>password-cleartext</authentication>
    </incomingServer>
    <incomingServer type="pop3">
      <hostname>POP.Example.COM.</hostname>
      <port>995</port>
      <socketType>SSL</socketType>
      <username>%EMAILLOCALPART%</username>
      <authentication>password-cleartext</authentication>
    </incomingServer>
    <incomingServer type="exchange">
      <hostname>outlook.example.com</hostname>
      <port>443</port>
      <username>%EMAILADDRESS%</username>
      <authentication>OAuth2</authentication>
      <owaURL>https://outlook.example.com/owa/</owaURL>
    </incomingServer>
    <outgoingServer type="smtp">
      <hostname>smtp.example.com</hostname>
      <port>587</port>
      <socketType>STARTTLS</socketType>
      <username>%EMAILADDRESS%</username>
      <authentication>OAuth2</authentication>
      <authentication>password-cleartext</authentication>
    </outgoingServer>
    <documentation url="https://help.example.com/mail">
      <descr lang="en">Setting up mail clients</descr>
    </documentation>
  </emailProvider>
  <oAuth2>
    <issuer>login.example.com</issuer>
    <scope>https://mail.example.com/</scope>
    <authURL>https://login.example.com/authorize</authURL>
    <tokenURL>https://login.example.com/token</tokenURL>
  </oAuth2>
</clientConfig>
"""


def tb(servers: str, domains: str = "<domain>example.com</domain>") -> bytes:
    return (
        f'<clientConfig version="1.1"><emailProvider id="x">{domains}{servers}'
        "</emailProvider></clientConfig>"
    ).encode()


IMAP = (
    '<incomingServer type="imap"><hostname>imap.example.com</hostname><port>993</port>'
    "<socketType>SSL</socketType><username>%EMAILADDRESS%</username>"
    "<authentication>password-cleartext</authentication></incomingServer>"
)
SMTP = (
    '<outgoingServer type="smtp"><hostname>smtp.example.com</hostname><port>465</port>'
    "<socketType>SSL</socketType><username>%EMAILADDRESS%</username>"
    "<authentication>password-cleartext</authentication></outgoingServer>"
)


def test_ispdb_file_with_placeholders_and_two_incoming_servers() -> None:
    assert parse_autoconfig(ISPDB, EMAIL) == ClientConfig(
        incoming=(
            ServerSetting(
                "imap", "imap.example.com", 993, "SSL", EMAIL, ("OAuth2", "password-cleartext")
            ),
            ServerSetting(
                "pop3", "pop.example.com", 995, "SSL", "Jane.Doe", ("password-cleartext",)
            ),
        ),
        outgoing=(
            ServerSetting(
                "smtp", "smtp.example.com", 587, "STARTTLS", EMAIL, ("OAuth2", "password-cleartext")
            ),
        ),
        warnings=(
            "incomingServer 3: type 'exchange' is not imap or pop3; skipped "
            "(Thunderbird sets such accounts up elsewhere, if at all)",
        ),
        display_name="Example Mail",
    )


def test_labels_and_insecure_settings() -> None:
    imap = ServerSetting("imap", "imap.example.com", 993, "SSL", EMAIL, ("password-cleartext",))
    assert imap.label() == "IMAP imap.example.com:993 SSL"
    assert insecure(imap) is None
    starttls = ServerSetting("smtp", "smtp.example.com", 587, "STARTTLS", "", ("OAuth2",))
    assert insecure(starttls) is None
    plain = ServerSetting("pop3", "pop.example.com", 110, "plain", "jane", ("password-cleartext",))
    assert insecure(plain) == (
        "mail and password travel unencrypted (no TLS, and the password is sent as it is)"
    )
    hashed = ServerSetting(
        "imap", "imap.example.com", 143, "plain", "jane", ("password-encrypted",)
    )
    assert insecure(hashed) == "mail and password travel unencrypted (no TLS)"
    relay = ServerSetting("smtp", "smtp.example.com", 25, "plain", "", ("none",))
    assert insecure(relay) == "mail travels unencrypted (no TLS)"


def test_a_file_for_other_domains_is_used_with_a_warning() -> None:
    body = tb(IMAP + SMTP, "<domain>example.org</domain><domain>Example.NET</domain>")
    assert parse_autoconfig(body, EMAIL).warnings == (
        "emailProvider lists the domains 'example.org', 'example.net' but not example.com: "
        "Thunderbird uses the file anyway, but it looks copied from another provider",
    )
    assert parse_autoconfig(tb(IMAP + SMTP, ""), EMAIL).warnings == (
        "emailProvider lists no domain (it should list example.com)",
    )


def test_every_problem_at_once() -> None:
    body = tb(
        '<incomingServer type="imap"><hostname>imap.example.com</hostname><port>99999</port>'
        "<socketType>ssl</socketType><authentication>password-cleartext</authentication>"
        "</incomingServer>"
        '<incomingServer type="pop3"><port>995</port><socketType>TLS</socketType>'
        "<authentication>password-cleartext</authentication></incomingServer>"
        '<incomingServer type="imap"><hostname>%USERDOMAIN%</hostname><port>143</port>'
        "<authentication>password-cleartext</authentication></incomingServer>"
        '<incomingServer type="imap"><hostname>mail.%EMAILADDRESS%</hostname>'
        "<port>993</port><socketType>SSL</socketType>"
        "<authentication>kerberos</authentication></incomingServer>"
    )
    assert problems(parse_autoconfig, body) == (
        "incomingServer 1: port '99999' is not a port number",
        "incomingServer 1: socketType 'ssl' is not plain, SSL or STARTTLS "
        "(write SSL: Thunderbird reads them in this case)",
        "incomingServer 2: no hostname",
        "incomingServer 2: socketType 'TLS' is not plain, SSL or STARTTLS",
        "incomingServer 3: hostname '%USERDOMAIN%' is not a host name",
        "incomingServer 3: no socketType",
        "incomingServer 4: hostname 'mail.%EMAILADDRESS%' "
        "('mail.Jane.Doe@Example.com' once filled in) is not a host name",
        "incomingServer 4: no authentication Thunderbird knows (password-cleartext, "
        "password-encrypted, OAuth2, NTLM, GSSAPI, TLS-client-cert, client-IP-address, none); "
        "it skips the server",
        "emailProvider has no outgoingServer of type smtp",
    )


def test_no_usable_servers() -> None:
    body = tb('<incomingServer type="jmap"><hostname>jmap.example.com</hostname></incomingServer>')
    assert problems(parse_autoconfig, body) == (
        "emailProvider has no incomingServer of type imap or pop3",
        "emailProvider has no outgoingServer of type smtp",
    )


def test_wrong_root_and_no_provider() -> None:
    page = b"<html><head><title>Login</title></head><body>Sign in</body></html>"
    assert problems(parse_autoconfig, page) == (
        "the root element is 'html', not clientConfig (an HTML page, not the file)",
    )
    assert problems(parse_autoconfig, b'<clientConfig version="1.1"/>') == (
        "clientConfig has no emailProvider element",
    )


def test_authentication_names() -> None:
    body = tb(
        IMAP.replace(
            "<authentication>password-cleartext</authentication>",
            "<authentication>magic</authentication><authentication>plain</authentication>"
            "<authentication>secure</authentication>",
        )
        + SMTP.replace("password-cleartext", "smtp-after-pop")
    )
    config = parse_autoconfig(body, EMAIL)
    assert config.incoming[0].auth == ("password-cleartext", "password-encrypted")
    assert config.outgoing[0].auth == ("smtp-after-pop",)
    assert config.warnings == (
        "incomingServer 1: authentication 'magic' is not a method Thunderbird knows; "
        "it tries the next one",
        "incomingServer 1: authentication 'plain' is a deprecated name for password-cleartext; "
        "write password-cleartext",
        "incomingServer 1: authentication 'secure' is a deprecated name for password-encrypted; "
        "write password-encrypted",
    )


def test_unknown_username_placeholder_and_namespaced_file() -> None:
    body = tb(IMAP.replace("%EMAILADDRESS%", "%USERNAME%") + SMTP).replace(
        b"<clientConfig ", b'<clientConfig xmlns="urn:example:odd" '
    )
    config = parse_autoconfig(body, EMAIL)
    assert config.incoming[0].username == "%USERNAME%"
    assert config.warnings == (
        "incomingServer 1: username '%USERNAME%' keeps '%USERNAME%', "
        "which Thunderbird does not fill in",
    )


def test_international_host_name_becomes_a_labels() -> None:
    body = tb(IMAP.replace("imap.example.com", "MAIL.Bücher.example") + SMTP)
    assert parse_autoconfig(body, EMAIL).incoming[0].hostname == "mail.xn--bcher-kva.example"


def test_the_address_must_be_one() -> None:
    with pytest.raises(InputError, match="'jane' is not an email address"):
        parse_autoconfig(ISPDB, "jane")


# -- Outlook autodiscover -------------------------------------------------------------------

AD_SETTINGS = b"""<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">
  <Response xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a">
    <User>
      <DisplayName>Jane Doe</DisplayName>
    </User>
    <Account>
      <AccountType>email</AccountType>
      <Action>settings</Action>
      <Protocol>
        <Type>WEB</Type>
        <Internal><OWAUrl AuthenticationMethod="Fba">https://mail.example.com/owa</OWAUrl></Internal>
      </Protocol>
      <Protocol>
        <Type>IMAP</Type>
        <Server>imap.example.com</Server>
        <Port>993</Port>
        <DomainRequired>off</DomainRequired>
        <LoginName>jane.doe@example.com</LoginName>
        <SPA>off</SPA>
        <SSL>on</SSL>
        <AuthRequired>on</AuthRequired>
      </Protocol>
      <Protocol>
        <Type>SMTP</Type>
        <Server>smtp.example.com</Server>
        <Port>587</Port>
        <DomainRequired>off</DomainRequired>
        <SPA>off</SPA>
        <Encryption>TLS</Encryption>
        <AuthRequired>on</AuthRequired>
        <UsePOPAuth>off</UsePOPAuth>
        <SMTPLast>off</SMTPLast>
      </Protocol>
    </Account>
  </Response>
</Autodiscover>
"""

AD_REDIRECT_ADDR = b"""<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">
  <Response xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a">
    <Account>
      <Action>redirectAddr</Action>
      <RedirectAddr>jane.doe@tenant.example.net</RedirectAddr>
    </Account>
  </Response>
</Autodiscover>
"""

AD_REDIRECT_URL = b"""<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">
  <Response xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a">
    <Account>
      <Action>redirectUrl</Action>
      <RedirectUrl>https://autodiscover.tenant.example.net/autodiscover/autodiscover.xml</RedirectUrl>
    </Account>
  </Response>
</Autodiscover>
"""

AD_ERROR = b"""<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">
  <Response>
    <Error Time="16:56:49.4134078" Id="1054084152">
      <ErrorCode>600</ErrorCode>
      <Message>Invalid Request</Message>
      <DebugData />
    </Error>
  </Response>
</Autodiscover>
"""


def ad(protocols: str, action: str = "<Action>settings</Action>") -> bytes:
    return (
        '<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">'
        f'<Response xmlns="{OUTLOOK_NS}"><Account><AccountType>email</AccountType>{action}'
        f"{protocols}</Account></Response></Autodiscover>"
    ).encode()


def protocol(kind: str, server: str, port: str, extra: str = "") -> str:
    fields = f"<Type>{kind}</Type><Server>{server}</Server><Port>{port}</Port>{extra}"
    return f"<Protocol>{fields}</Protocol>"


def test_request_body() -> None:
    body = autodiscover_request("a&b<c>@example.com")
    assert b"<EMailAddress>a&amp;b&lt;c&gt;@example.com</EMailAddress>" in body
    root = ET.fromstring(body)
    assert root.tag == f"{{{REQUEST_NS}}}Autodiscover"
    request = root.find(f"{{{REQUEST_NS}}}Request")
    assert request is not None
    assert request.findtext(f"{{{REQUEST_NS}}}EMailAddress") == "a&b<c>@example.com"
    assert request.findtext(f"{{{REQUEST_NS}}}AcceptableResponseSchema") == OUTLOOK_NS
    with pytest.raises(InputError, match="is not an email address"):
        autodiscover_request("jane\x00@example.com")


def test_settings_response() -> None:
    assert parse_autodiscover(AD_SETTINGS, EMAIL) == Autodiscover(
        ClientConfig(
            incoming=(
                ServerSetting(
                    "imap",
                    "imap.example.com",
                    993,
                    "SSL",
                    "jane.doe@example.com",
                    ("password-cleartext",),
                ),
            ),
            outgoing=(
                ServerSetting(
                    "smtp", "smtp.example.com", 587, "STARTTLS", EMAIL, ("password-cleartext",)
                ),
            ),
            display_name="Jane Doe",
        )
    )


def test_redirects_and_errors() -> None:
    assert parse_autodiscover(AD_REDIRECT_ADDR, EMAIL) == Autodiscover(
        None, redirect_addr="jane.doe@tenant.example.net"
    )
    assert parse_autodiscover(AD_REDIRECT_URL, EMAIL) == Autodiscover(
        None, redirect_url="https://autodiscover.tenant.example.net/autodiscover/autodiscover.xml"
    )
    assert parse_autodiscover(AD_ERROR, EMAIL) == Autodiscover(
        None,
        error="the server answered error 600: 'Invalid Request' "
        "(the server did not understand the request)",
    )


def test_bad_redirects() -> None:
    assert problems(parse_autodiscover, ad("", "<Action>redirectAddr</Action>")) == (
        "Action is redirectAddr but there is no RedirectAddr",
    )
    action = "<Action>redirectAddr</Action><RedirectAddr>jane at example</RedirectAddr>"
    assert problems(parse_autodiscover, ad("", action)) == (
        "RedirectAddr 'jane at example' is not an email address",
    )
    assert problems(parse_autodiscover, ad("", "<Action>redirectUrl</Action>")) == (
        "Action is redirectUrl but there is no RedirectUrl",
    )
    action = "<Action>redirectUrl</Action><RedirectUrl>http://ad.example.com/a.xml</RedirectUrl>"
    assert problems(parse_autodiscover, ad("", action)) == (
        "RedirectUrl 'http://ad.example.com/a.xml' is not an https URL (Outlook follows no other)",
    )
    action = "<Action>redirectAddr</Action><RedirectAddr>jane.doe@example.com</RedirectAddr>"
    assert parse_autodiscover(ad("", action), EMAIL).warnings == (
        "RedirectAddr is the address asked about: following it loops",
    )


def test_encryption_wins_over_ssl() -> None:
    body = ad(
        protocol("POP3", "pop.example.com", "110", "<SSL>on</SSL><Encryption>None</Encryption>")
        + protocol("IMAP", "imap.example.com", "993", "<SSL>off</SSL><Encryption>SSL</Encryption>")
        + protocol("IMAP", "imap.example.com", "143", "<Encryption>Auto</Encryption><SPA>on</SPA>")
        + protocol("SMTP", "smtp.example.com", "587", "<SSL>on</SSL>")
        + protocol(
            "SMTP", "relay.example.com", "25", "<SSL>off</SSL><AuthRequired>off</AuthRequired>"
        )
    )
    config = parse_autodiscover(body, EMAIL).config
    assert config is not None
    assert [(s.label(), s.auth, s.username) for s in config.incoming + config.outgoing] == [
        ("POP3 pop.example.com:110 plain", ("password-cleartext",), EMAIL),
        ("IMAP imap.example.com:993 SSL", ("password-cleartext",), EMAIL),
        ("IMAP imap.example.com:143 STARTTLS", ("SPA",), EMAIL),
        ("SMTP smtp.example.com:587 SSL", ("password-cleartext",), EMAIL),
        ("SMTP relay.example.com:25 plain", ("none",), ""),
    ]
    assert config.warnings == (
        "Protocol 3 (IMAP): Encryption Auto leaves TLS to Outlook's choice; "
        "read as STARTTLS on port 143",
        "Protocol 4 (SMTP): SSL on with port 587, where servers usually speak STARTTLS; "
        "if this one does, say <Encryption>TLS</Encryption>",
    )


def test_settings_problems() -> None:
    body = ad(
        protocol("EXCH", "ex.example.com", "443")
        + protocol("IMAP", "imap example com", "993", "<SSL>yes</SSL>")
        + protocol("SMTP", "smtp.example.com", "0", "<Encryption>STARTTLS</Encryption>")
        + "<Protocol><Type>POP3</Type></Protocol>"
    )
    assert problems(parse_autodiscover, body) == (
        "Protocol 2 (IMAP): Server 'imap example com' is not a host name",
        "Protocol 2 (IMAP): SSL 'yes' is not on or off",
        "Protocol 3 (SMTP): Port '0' is not a port number",
        "Protocol 3 (SMTP): Encryption 'STARTTLS' is not SSL, TLS, None or Auto",
        "Protocol 4 (POP3): no Server",
        "Protocol 4 (POP3): no Port",
    )
    exchange_only = ad(protocol("EXCH", "ex.example.com", "443") + protocol("EXPR", "ex", "443"))
    assert problems(parse_autodiscover, exchange_only) == (
        "Action is settings but no Protocol is IMAP, POP3 or SMTP (only EXCH, EXPR, which are "
        "Exchange's)",
    )
    smtp_only = ad(protocol("SMTP", "smtp.example.com", "465"))
    assert problems(parse_autodiscover, smtp_only) == (
        "Action is settings but no Protocol is IMAP or POP3: nothing to read mail with",
    )


def test_namespaces() -> None:
    shouting = AD_SETTINGS.replace(b"http://schemas.microsoft.com", b"HTTP://Schemas.Microsoft.COM")
    assert parse_autodiscover(shouting, EMAIL) == parse_autodiscover(AD_SETTINGS, EMAIL)
    bare = ad(protocol("IMAP", "imap.example.com", "993")).replace(
        b' xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"', b""
    )
    result = parse_autodiscover(bare, EMAIL)
    assert result.warnings == (
        "the Autodiscover element's namespace is '', not "
        "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006: "
        "Outlook may ignore the response",
    )
    assert result.config is not None
    assert result.config.warnings == ("no Protocol is SMTP: Outlook gets no server to send with",)
    assert problems(parse_autodiscover, autodiscover_request(EMAIL)) == (
        "the body is an autodiscover request, not a response: the server echoed it back",
    )
    assert problems(parse_autodiscover, ISPDB) == (
        "the root element is 'clientConfig', not Autodiscover",
    )


# -- Apple configuration profiles -----------------------------------------------------------

PROFILE = b"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>PayloadContent</key>
  <array>
    <dict>
      <key>EmailAccountDescription</key>
      <string>Example Mail</string>
      <key>EmailAccountName</key>
      <string>Jane Doe</string>
      <key>EmailAccountType</key>
      <string>EmailTypeIMAP</string>
      <key>EmailAddress</key>
      <string>jane.doe@example.com</string>
      <key>IncomingMailServerAuthentication</key>
      <string>EmailAuthPassword</string>
      <key>IncomingMailServerHostName</key>
      <string>imap.example.com</string>
      <key>IncomingMailServerPortNumber</key>
      <integer>993</integer>
      <key>IncomingMailServerUseSSL</key>
      <true/>
      <key>IncomingMailServerUsername</key>
      <string>jane.doe@example.com</string>
      <key>OutgoingMailServerAuthentication</key>
      <string>EmailAuthCRAMMD5</string>
      <key>OutgoingMailServerHostName</key>
      <string>smtp.example.com</string>
      <key>OutgoingMailServerPortNumber</key>
      <integer>587</integer>
      <key>OutgoingMailServerUseSSL</key>
      <true/>
      <key>OutgoingMailServerUsername</key>
      <string>jane.doe@example.com</string>
      <key>OutgoingPasswordSameAsIncomingPassword</key>
      <true/>
      <key>PayloadDisplayName</key>
      <string>Mail</string>
      <key>PayloadIdentifier</key>
      <string>com.example.profile.mail</string>
      <key>PayloadType</key>
      <string>com.apple.mail.managed</string>
      <key>PayloadUUID</key>
      <string>2C3B1A2E-0D0C-4C57-9E5F-6B1A1D4E8F11</string>
      <key>PayloadVersion</key>
      <integer>1</integer>
    </dict>
  </array>
  <key>PayloadDisplayName</key>
  <string>Example Mail settings</string>
  <key>PayloadIdentifier</key>
  <string>com.example.profile</string>
  <key>PayloadRemovalDisallowed</key>
  <false/>
  <key>PayloadType</key>
  <string>Configuration</string>
  <key>PayloadUUID</key>
  <string>9A1F5F0B-6E55-4C4B-8E0A-0F2B1E6A4D22</string>
  <key>PayloadVersion</key>
  <integer>1</integer>
</dict>
</plist>
"""

PROFILE_CONFIG = ClientConfig(
    incoming=(
        ServerSetting(
            "imap", "imap.example.com", 993, "SSL", "jane.doe@example.com", ("password-cleartext",)
        ),
    ),
    outgoing=(
        ServerSetting(
            "smtp",
            "smtp.example.com",
            587,
            "STARTTLS",
            "jane.doe@example.com",
            ("password-encrypted",),
        ),
    ),
    display_name="Example Mail",
)
UNSIGNED = "the profile is not signed: iOS shows it as Unverified"


def profile_dict() -> dict[str, Any]:
    data = plistlib.loads(PROFILE)
    assert isinstance(data, dict)
    return data


def mail_payload(**changes: Any) -> bytes:
    data = profile_dict()
    payload = data["PayloadContent"][0]
    for key, value in changes.items():
        if value is None:
            del payload[key]
        else:
            payload[key] = value
    return plistlib.dumps(data)


def signing_identity() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Ltd"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Example Profile Signing"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return cert, key


def signed(content: bytes, *options: pkcs7.PKCS7Options) -> bytes:
    cert, key = signing_identity()
    return (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(content)
        .add_signer(cert, key, hashes.SHA256())
        .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary, *options])
    )


def test_xml_profile() -> None:
    assert parse_mobileconfig(PROFILE, "jane.doe@example.com") == MobileConfig(
        PROFILE_CONFIG,
        signed=False,
        signer=None,
        identifier="com.example.profile",
        warnings=(UNSIGNED,),
    )


def test_binary_profile() -> None:
    body = plistlib.dumps(profile_dict(), fmt=plistlib.FMT_BINARY)
    assert body.startswith(b"bplist00")
    result = parse_mobileconfig(body, "jane.doe@example.com")
    assert result.config == PROFILE_CONFIG
    assert not result.signed


def test_signed_profile() -> None:
    body = signed(PROFILE)
    assert body[:1] == b"\x30"
    assert parse_mobileconfig(body, "jane.doe@example.com") == MobileConfig(
        PROFILE_CONFIG,
        signed=True,
        signer=None,  # self-signed: who signed is a claim, not a fact
        identifier="com.example.profile",
        unverified="the signer's certificate (CN=Example Profile Signing,O=Example Ltd) is "
        "self-signed, so anyone could have made it",
    )


def _der(tag: int, content: bytes) -> bytes:
    size = len(content)
    length = bytes([size]) if size < 0x80 else bytes([0x82]) + size.to_bytes(2, "big")
    return bytes([tag]) + length + content


def _indefinite(tag: int, content: bytes) -> bytes:
    return bytes([tag, 0x80]) + content + b"\x00\x00"


def _elements(data: bytes) -> list[tuple[int, bytes]]:
    found, pos = [], 0
    while pos < len(data):
        tag, first = data[pos], data[pos + 1]
        pos += 2
        if first >= 0x80:
            count = first & 0x7F
            first, pos = int.from_bytes(data[pos : pos + count], "big"), pos + count
        found.append((tag, data[pos : pos + first]))
        pos += first
    return found


def apple_style(der: bytes) -> bytes:
    """The same SignedData as Apple's CMSEncoder lays it out: indefinite lengths
    on the outer layers and the profile in a chunked (constructed) OCTET STRING.
    The certificates stay DER, as they are copied in whole."""
    [(_, info)] = _elements(der)
    oid, (_, wrapped) = _elements(info)
    [(_, signed_data)] = _elements(wrapped)
    version, algorithms, (_, encap), *rest = _elements(signed_data)
    content_type, (_, explicit) = _elements(encap)
    [(_, profile)] = _elements(explicit)
    chunks = b"".join(_der(0x04, profile[i : i + 1000]) for i in range(0, len(profile), 1000))
    encap_ber = _indefinite(
        0x30, _der(*content_type) + _indefinite(0xA0, _indefinite(0x24, chunks))
    )
    body = _der(*version) + _der(*algorithms) + encap_ber + b"".join(_der(*r) for r in rest)
    return _indefinite(0x30, _der(*oid) + _indefinite(0xA0, _indefinite(0x30, body)))


def test_signed_profile_in_ber_as_apple_writes_it() -> None:
    body = apple_style(signed(PROFILE))
    assert body[:2] == b"\x30\x80"
    result = parse_mobileconfig(body, "jane.doe@example.com")
    assert result.config == PROFILE_CONFIG
    assert result.signed and result.signer is None  # self-signed: verified below, with a CA
    assert result.unverified is not None and "Example Profile Signing" in result.unverified


def test_detached_or_broken_signatures() -> None:
    detached = signed(PROFILE, pkcs7.PKCS7Options.DetachedSignature)
    assert problems(parse_mobileconfig, detached) == (
        "the signed profile does not carry the profile (a detached signature)",
    )
    broken = problems(parse_mobileconfig, signed(PROFILE)[:200])
    assert len(broken) == 1
    assert broken[0].startswith("the profile starts like a signed profile (CMS) but is not one (")


# -- signatures verified: a throwaway PKI, its root passed as ca_file ---------------------------

SIGNER = "CN=profiles.example.test,O=mailcheck test lab"
PKI_SPECS = [
    CertSpec("signer", ("profiles.example.test",), key="ec256"),
    CertSpec("signer-rsa", ("profiles.example.test",)),
    CertSpec("signer-nochain", ("profiles.example.test",), key="ec256", send_chain=False),
    CertSpec(
        "signer-unknownca", ("profiles.example.test",), key="ec256", issuer="untrusted-intermediate"
    ),
    CertSpec(
        "signer-expired",
        ("profiles.example.test",),
        key="ec256",
        not_before=datetime.timedelta(days=-30),
        not_after=datetime.timedelta(days=-2),
    ),
]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LabPKI:
    pki = LabPKI(tmp_path_factory.mktemp("pki"))
    pki.build(PKI_SPECS)
    return pki


def signed_by(
    pki: LabPKI,
    name: str,
    content: bytes = PROFILE,
    *options: pkcs7.PKCS7Options,
    key_of: str | None = None,
    rsa_padding: padding.PSS | padding.PKCS1v15 | None = None,
) -> bytes:
    """`content` signed with the key of `key_of` (default: `name`) under the certificate of
    `name`, carrying the chain its PEM file holds (the leaf, then the intermediate)."""
    leaf, *chain = x509.load_pem_x509_certificates(pki.cert_path(name).read_bytes())
    key = serialization.load_pem_private_key(pki.key_path(key_of or name).read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    builder = pkcs7.PKCS7SignatureBuilder().set_data(content)
    builder = builder.add_signer(leaf, key, hashes.SHA256(), rsa_padding=rsa_padding)
    for certificate in chain:
        builder = builder.add_certificate(certificate)
    return builder.sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary, *options])


def verified(pki: LabPKI, body: bytes) -> MobileConfig:
    return parse_mobileconfig(body, "jane.doe@example.com", ca_file=str(pki.ca_file))


@pytest.mark.parametrize(
    ("name", "options", "rsa_padding"),
    [
        ("signer", (), None),
        ("signer", (pkcs7.PKCS7Options.NoAttributes,), None),
        ("signer-rsa", (), None),
        ("signer-rsa", (), padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)),
    ],
    ids=["ecdsa", "ecdsa-no-signed-attributes", "rsa-pkcs1", "rsa-pss"],
)
def test_a_signature_chained_to_a_trusted_root_names_its_signer(
    pki: LabPKI,
    name: str,
    options: tuple[pkcs7.PKCS7Options, ...],
    rsa_padding: padding.PSS | None,
) -> None:
    profile = verified(pki, signed_by(pki, name, PROFILE, *options, rsa_padding=rsa_padding))
    assert (profile.signed, profile.signer, profile.unverified) == (True, SIGNER, None)
    assert profile.config == PROFILE_CONFIG


def test_a_signature_in_ber_as_apple_writes_it_verifies(pki: LabPKI) -> None:
    profile = verified(pki, apple_style(signed_by(pki, "signer")))
    assert (profile.signer, profile.unverified) == (SIGNER, None)


def test_a_profile_changed_after_signing_is_not_signed_by_anyone(pki: LabPKI) -> None:
    """The attack: a valid signed profile, its IMAP server swapped for the attacker's."""
    for options in [(), (pkcs7.PKCS7Options.NoAttributes,)]:
        body = signed_by(pki, "signer", PROFILE, *options)
        tampered = body.replace(b"imap.example.com", b"evil.example.net")
        assert tampered != body
        profile = verified(pki, tampered)
        assert profile.config.incoming[0].hostname == "evil.example.net"
        assert profile.signed and profile.signer is None
        assert profile.unverified is not None
        assert "changed after it was signed" in profile.unverified, profile.unverified


def test_a_trusted_certificate_with_someone_elses_signature_is_not_trusted(pki: LabPKI) -> None:
    """The attack: the operator's real signing certificate (public: it is in every
    profile they serve) attached to a profile the attacker signed with their own key."""
    forged = signed_by(pki, "signer", key_of="signer-nochain")
    profile = verified(pki, forged)
    assert profile.signer is None
    assert profile.unverified == (
        f"the signature does not match the signer's certificate ({SIGNER}): the profile was "
        "changed after it was signed, or signed with another key"
    )


def test_a_tampered_signature_is_not_trusted(pki: LabPKI) -> None:
    info = cms.ContentInfo.load(signed_by(pki, "signer"))
    signer_info = info["content"]["signer_infos"][0]
    signature = bytearray(signer_info["signature"].native)
    signature[-1] ^= 1
    signer_info["signature"] = bytes(signature)
    profile = verified(pki, info.dump(force=True))
    assert profile.signer is None
    assert profile.unverified is not None and "does not match" in profile.unverified


@pytest.mark.parametrize(
    ("name", "ca", "why"),
    [
        ("signer", "none", "does not lead to a trusted root (unable to get local issuer"),
        ("signer-unknownca", "lab", "does not lead to a trusted root"),
        ("signer-nochain", "lab", "does not lead to a trusted root"),
        ("signer-expired", "lab", "expired on "),
    ],
)
def test_a_valid_signature_by_an_untrusted_certificate_is_not_trusted(
    pki: LabPKI, name: str, ca: str, why: str
) -> None:
    ca_file = str(pki.ca_file) if ca == "lab" else None
    profile = parse_mobileconfig(signed_by(pki, name), "jane.doe@example.com", ca_file=ca_file)
    assert profile.signed and profile.signer is None
    assert profile.unverified is not None
    assert profile.unverified.startswith(f"the signer's certificate ({SIGNER}) ")
    assert why in profile.unverified, profile.unverified
    assert profile.config == PROFILE_CONFIG  # the settings are still read and tried


def test_too_many_certificates_are_not_read(pki: LabPKI) -> None:
    leaf, *chain = x509.load_pem_x509_certificates(pki.cert_path("signer").read_bytes())
    key = serialization.load_pem_private_key(pki.key_path("signer").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    builder = pkcs7.PKCS7SignatureBuilder().set_data(PROFILE).add_signer(leaf, key, hashes.SHA256())
    for _ in range(MAX_CERTIFICATES):
        builder = builder.add_certificate(chain[0])
    body = builder.sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    profile = verified(pki, body)
    assert profile.signer is None
    assert profile.unverified == (
        f"the signature carries {MAX_CERTIFICATES + 1} certificates; this check reads at most "
        f"{MAX_CERTIFICATES}, so it did not verify the signature"
    )


def test_profile_settings_rules() -> None:
    body = mail_payload(
        EmailAccountType="EmailTypePOP",
        IncomingMailServerHostName="POP.example.com",
        IncomingMailServerPortNumber=None,
        IncomingMailServerUseSSL=False,
        IncomingMailServerUsername=None,
        IncomingMailServerAuthentication="EmailAuthNone",
        OutgoingMailServerPortNumber=None,
        OutgoingMailServerAuthentication="EmailAuthNTLM",
    )
    config = parse_mobileconfig(body, "someone.else@example.com").config
    assert config.incoming == (
        ServerSetting("pop3", "pop.example.com", 110, "plain", "", ("none",)),
    )
    assert config.outgoing == (
        ServerSetting(
            "smtp", "smtp.example.com", 25, "STARTTLS", "jane.doe@example.com", ("NTLM",)
        ),
    )
    assert config.warnings == (
        "EmailAddress is 'jane.doe@example.com', not the address checked "
        "(someone.else@example.com)",
        "no IncomingMailServerPortNumber: iOS uses the protocol's default, 110",
        "no OutgoingMailServerPortNumber: iOS tries 25, 587 and 465 in turn; read as 25 "
        "(set the port)",
    )
    assert insecure(config.incoming[0]) == "mail travels unencrypted (no TLS)"


def test_profile_problems_all_at_once() -> None:
    body = mail_payload(
        EmailAccountType="EmailTypeExchange",
        IncomingMailServerHostName=None,
        IncomingMailServerPortNumber="993",
        IncomingMailServerUseSSL="yes",
        OutgoingMailServerPortNumber=70000,
        OutgoingMailServerAuthentication="EmailAuthKerberos",
        PayloadUUID=None,
    )
    assert problems(parse_mobileconfig, body) == (
        "PayloadContent item 1 (com.apple.mail.managed) has no PayloadUUID",
        "PayloadContent item 1 (com.apple.mail.managed): EmailAccountType 'EmailTypeExchange' "
        "is not EmailTypeIMAP or EmailTypePOP",
        "PayloadContent item 1 (com.apple.mail.managed) has no IncomingMailServerHostName",
        "PayloadContent item 1 (com.apple.mail.managed): IncomingMailServerUseSSL is a string "
        "('yes'), not a boolean",
        "PayloadContent item 1 (com.apple.mail.managed): IncomingMailServerPortNumber is a "
        "string ('993'), not an integer",
        "PayloadContent item 1 (com.apple.mail.managed): OutgoingMailServerPortNumber 70000 is "
        "not a port number",
        "PayloadContent item 1 (com.apple.mail.managed): OutgoingMailServerAuthentication "
        "'EmailAuthKerberos' is not one of EmailAuthNone, EmailAuthPassword, EmailAuthCRAMMD5, "
        "EmailAuthNTLM, EmailAuthHTTPMD5",
    )


def test_profile_shape_problems() -> None:
    data = profile_dict()
    data["PayloadType"] = "com.apple.mail.managed"
    del data["PayloadIdentifier"]
    data["PayloadVersion"] = True
    data["PayloadContent"] = [
        "mail",
        {"PayloadType": "com.apple.wifi.managed", "SSID_STR": "Office"},
    ]
    assert problems(parse_mobileconfig, plistlib.dumps(data)) == (
        "the profile's PayloadType is 'com.apple.mail.managed', not Configuration",
        "the profile has no PayloadIdentifier",
        "the profile: PayloadVersion is a boolean, not an integer",
        "PayloadContent item 1 is a string ('mail'), not a dictionary",
        "PayloadContent has no com.apple.mail.managed payload (it has com.apple.wifi.managed)",
    )
    assert problems(parse_mobileconfig, plistlib.dumps(["not", "a", "profile"])) == (
        "the profile's top level is an array, not a dictionary",
    )


# -- hostile input ------------------------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<clientConfig><emailProvider><displayName>&lol9;</displayName></emailProvider></clientConfig>
"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE clientConfig [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<clientConfig><emailProvider><displayName>&xxe;</displayName></emailProvider></clientConfig>
"""

XML_PARSERS = [parse_autoconfig, parse_autodiscover]
ALL_PARSERS = [parse_autoconfig, parse_autodiscover, parse_mobileconfig]


@pytest.mark.parametrize("parse", XML_PARSERS)
def test_billion_laughs_is_refused_unread(parse: Callable[[bytes, str], object]) -> None:
    assert problems(parse, BILLION_LAUGHS) == (
        f"the document declares the XML entity 'lol'; {REFUSED}",
    )


@pytest.mark.parametrize("parse", XML_PARSERS)
def test_external_entity_is_refused_unread(parse: Callable[[bytes, str], object]) -> None:
    assert problems(parse, XXE) == (
        f"the document declares the XML entity 'xxe' (pointing at 'file:///etc/passwd'); {REFUSED}",
    )


PLIST_ENTITY = b"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist [<!ENTITY host "imap.example.com">]>
<plist version="1.0"><dict><key>PayloadType</key><string>&host;</string></dict></plist>
"""


def test_plist_entities_are_refused_by_plistlib() -> None:
    for body in (
        PLIST_ENTITY,
        BILLION_LAUGHS.replace(b"lolz", b"plist").replace(b"clientConfig", b"plist"),
        XXE.replace(b"clientConfig", b"plist"),
    ):
        assert problems(parse_mobileconfig, body) == (
            f"the profile declares XML entities; {REFUSED}",
        )


@pytest.mark.parametrize("parse", ALL_PARSERS)
def test_oversized_bodies_are_refused_before_parsing(parse: Callable[[bytes, str], object]) -> None:
    body = b"<" + b"x" * MAX_BYTES
    assert problems(parse, body) == (
        f"the document is {MAX_BYTES + 1} bytes; client configurations are a few KiB and this "
        f"check reads at most {MAX_BYTES}",
    )


@pytest.mark.parametrize("parse", ALL_PARSERS)
def test_empty_bodies(parse: Callable[[bytes, str], object]) -> None:
    assert problems(parse, b" \r\n") == ("the document is empty",)


def test_garbage() -> None:
    garbage = bytes(range(256)) * 4
    assert problems(parse_autoconfig, garbage) == (
        "the document is not XML (not well-formed (invalid token): line 1, column 0)",
    )
    assert problems(parse_autodiscover, b"HTTP/1.1 200 OK\r\n\r\n<html>") == (
        "the document is not XML (not well-formed (invalid token): line 1, column 4)",
    )
    assert problems(parse_autoconfig, ISPDB.replace(b"UTF-8", b"UTF-9")) == (
        "the document's XML declaration names an unknown encoding: UTF-9",
    )
    assert problems(parse_mobileconfig, garbage) == (
        "the profile is not a property list (Invalid file)",
    )
    assert problems(parse_mobileconfig, b"0\x82\xff\xff" + garbage)[0].startswith(
        "the profile starts like a signed profile (CMS) but is not one ("
    )
    assert problems(parse_mobileconfig, b"<plist><dict><key>a</key></plist>")[0].startswith(
        "the profile is not a property list ("
    )


def test_remote_text_in_problems_is_made_safe() -> None:
    body = tb(IMAP.replace("993", "\u202e" + "9" * 100) + SMTP)
    [problem] = problems(parse_autoconfig, body)
    assert "\u202e" not in problem
    assert problem.startswith("incomingServer 1: port '\\u202e999")
    assert len(problem) < 120


def test_config_error_is_a_mailcheck_error() -> None:
    error = ConfigError(["one", "two"])
    assert isinstance(error, MailcheckError)
    assert isinstance(error, ValueError)
    assert error.problems == ("one", "two")
    assert str(error) == "one; two"


# -- the autoconfig stage's probe: what the report says ---------------------------------------

PROFILE_HOST = "127.1.30.61"


async def report_on(profile: bytes, ca_file: str | None) -> list[tuple[str, str]]:
    """The findings of the Apple-profile probe for `profile`, served by aiohttp's web
    server on loopback (plain http: the probe's reading, not TLS, is under test)."""
    from aiohttp import web

    from checks.core.config import EngineConfig, Nameserver, Timeouts
    from checks.core.model import CheckRequest
    from checks.core.targets import TargetPolicy, parse_networks
    from checks.net.door import Network
    from checks.stages.autoconfig import probe_mobileconfig
    from checks.stages.probe import ProbeContext

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=profile, content_type="application/x-apple-aspen-config")

    app = web.Application()
    app.router.add_get("/mail.mobileconfig", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, PROFILE_HOST, 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        config = EngineConfig(
            nameservers=(Nameserver("127.1.30.53"),),  # never asked: the URL is a literal
            policy=TargetPolicy(parse_networks(["127.1.30.0/24"])),
            timeouts=Timeouts(connect=2, reply=2, dns=1),
            ca_file=ca_file,
        )
        url = f"http://{PROFILE_HOST}:{port}/mail.mobileconfig"
        request = CheckRequest(
            "example.com", "example.com", "jane.doe@example.com", mobileconfig_url=url
        )
        ctx = ProbeContext(request, Network(config), {})
        assert await probe_mobileconfig(ctx) is not None
    finally:
        await runner.cleanup()
    return [(f.code, f.summary.replace(url, "URL")) for f in ctx.findings]


async def test_the_report_names_a_signer_only_once_verified(pki: LabPKI) -> None:
    good = await report_on(signed_by(pki, "signer"), str(pki.ca_file))
    assert [code for code, _ in good] == ["mobileconfig.ok", "autoconfig.insecure"]
    assert good[0][1].startswith(f"profile com.example.profile (signed by {SIGNER}): IMAP")

    tampered = signed_by(pki, "signer").replace(b"imap.example.com", b"evil.example.net")
    bad = await report_on(tampered, str(pki.ca_file))
    assert [code for code, _ in bad] == [
        "mobileconfig.signature.unverified",
        "mobileconfig.ok",
        "autoconfig.insecure",
    ]
    assert bad[0][1].startswith("URL: the profile was changed after it was signed")
    assert bad[1][1].startswith(
        "profile com.example.profile (signed, but the signature does not verify): "
        "IMAP evil.example.net:993 SSL"
    )
    assert not any("signed by" in summary for _, summary in bad)
