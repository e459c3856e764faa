"""Pure protocol rules: SMTP replies and EHLO, IMAP and POP3 capabilities."""

import pytest

from checks.core.errors import ProtocolViolation
from checks.protocols.mailbox import imap_capabilities, imap_cleartext_login, pop3_cleartext_login
from checks.protocols.smtp import (
    Reply,
    auth_mechanisms,
    banner_name,
    capability,
    parse_ehlo,
    parse_reply_line,
)


@pytest.mark.parametrize(
    ("line", "parsed"),
    [
        ("220 mx.example.com ESMTP Postfix", (220, True, "mx.example.com ESMTP Postfix")),
        ("250-PIPELINING", (250, False, "PIPELINING")),
        ("250 ", (250, True, "")),
        ("250", (250, True, "")),
    ],
)
def test_reply_lines(line: str, parsed: tuple[int, bool, str]) -> None:
    assert parse_reply_line(line) == parsed


@pytest.mark.parametrize("line", ["", "hello", "25 short", "2500 long", "abc def", "* OK imap"])
def test_non_smtp_lines_are_violations(line: str) -> None:
    with pytest.raises(ProtocolViolation):
        parse_reply_line(line)


def test_ehlo_parsing() -> None:
    reply = Reply(
        250,
        (
            "mx1.example.com Hello",
            "PIPELINING",
            "size 10240000",
            "STARTTLS",
            "AUTH PLAIN LOGIN",
            "AUTH=LOGIN",
            "8BITMIME",
            "SMTPUTF8",
        ),
    )
    name, caps = parse_ehlo(reply)
    assert name == "mx1.example.com"
    assert capability(caps, "SIZE") == "10240000"
    assert capability(caps, "STARTTLS") == ""
    assert capability(caps, "CHUNKING") is None
    assert auth_mechanisms(caps) == {"PLAIN", "LOGIN"}
    assert auth_mechanisms(("AUTH=CRAM-MD5 DIGEST-MD5",)) == {"CRAM-MD5", "DIGEST-MD5"}


def test_banner_name() -> None:
    assert banner_name("220 MX1.Example.COM. ESMTP") == "mx1.example.com"
    assert banner_name("220") == ""


@pytest.mark.parametrize(
    ("line", "caps"),
    [
        (
            "* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED",
            ("IMAP4REV1", "STARTTLS", "LOGINDISABLED"),
        ),
        (
            "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] Dovecot ready.",
            ("IMAP4REV1", "SASL-IR", "AUTH=PLAIN"),
        ),
        ("* OK Dovecot ready.", ()),
    ],
)
def test_imap_capabilities(line: str, caps: tuple[str, ...]) -> None:
    assert imap_capabilities(line) == caps


def test_imap_cleartext_login() -> None:
    assert imap_cleartext_login(("IMAP4REV1", "STARTTLS", "LOGINDISABLED")) == []
    assert imap_cleartext_login(("IMAP4REV1", "STARTTLS", "AUTH=PLAIN")) == [
        "LOGIN",
        "AUTHENTICATE PLAIN",
    ]
    assert imap_cleartext_login(("LOGINDISABLED", "AUTH=SCRAM-SHA-256")) == []


def test_pop3_cleartext_login() -> None:
    assert pop3_cleartext_login(("TOP", "STLS", "UIDL")) == []
    assert pop3_cleartext_login(("USER", "STLS", "SASL PLAIN LOGIN")) == [
        "USER/PASS",
        "AUTH PLAIN",
        "AUTH LOGIN",
    ]
