"""The send test's lab side: each Sender (tests/lab/senders.py) really sends.

A stand-in receiver (aiosmtpd, STARTTLS with the lab's mx.sendtest.test
certificate) listens where the real one will, on RECEIVER_ADDRESS:25; one
message per Sender goes in through MailLab.send(), and one from alice through
healthy.test's submission server; each must arrive from the Sender's address,
with its HELO name, over TLS or not, and DKIM-signed so that dkimpy, asking
the lab's DNS, verifies it (or, for dkim="bad", does not). The DNS each
Sender relies on (PTR, A, SPF, DMARC, DKIM key, blocklist entry) is checked
against the lab's NSD as well.
"""

from __future__ import annotations

import email
import email.utils
import re
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import dkim  # type: ignore[import-untyped]
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.reversename
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from . import proc
from .control import Lab
from .mail import LAB_PASSWORD, LAB_USER
from .senders import (
    DKIM_SELECTOR,
    HEALTHY_SENDER,
    RECEIVER_ADDRESS,
    RECEIVER_DOMAIN,
    RECEIVER_HOST,
    RECEIVER_PORT,
    SENDERS,
    Sender,
    sender,
)
from .test_mail_lab import smtp_session
from .zones import BLOCKLIST_ZONE, NS_ADDRESS

pytestmark = pytest.mark.lab

ARRIVAL_TIMEOUT = 30.0
DNS_TIMEOUT = 5.0


@dataclass(frozen=True)
class Arrival:
    """One message as the stand-in receiver saw it."""

    peer: str  # the source address of the connection
    helo: str | None
    cipher: str | None  # None: no TLS
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes  # exactly as received (CRLF line ends)


class Sink:
    """Records every message; a test waits for the one with its Message-ID."""

    def __init__(self) -> None:
        self._arrivals: dict[str, Arrival] = {}
        self._arrived = threading.Condition()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        cipher = session.ssl.get("cipher") if session.ssl else None
        arrival = Arrival(
            peer=session.peer[0],
            helo=session.host_name,
            cipher=cipher[0] if cipher else None,
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=data,
        )
        message_id = email.message_from_bytes(data).get("Message-ID", "")
        with self._arrived:
            self._arrivals[message_id.strip()] = arrival
            self._arrived.notify_all()
        return "250 2.0.0 Ok: recorded"

    def wait(self, message_id: str, timeout: float = ARRIVAL_TIMEOUT) -> Arrival | None:
        with self._arrived:
            self._arrived.wait_for(lambda: message_id in self._arrivals, timeout)
            return self._arrivals.get(message_id)


@pytest.fixture(scope="module")
def sink(lab: Lab) -> Iterator[Sink]:
    """The stand-in receiver on RECEIVER_ADDRESS:25, STARTTLS with the lab certificate."""
    if proc.accepts(RECEIVER_ADDRESS, RECEIVER_PORT):
        pytest.fail(f"something already listens on {RECEIVER_ADDRESS}:{RECEIVER_PORT}")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    pki = lab.mail.pki
    context.load_cert_chain(pki.cert_path(RECEIVER_HOST), pki.key_path(RECEIVER_HOST))
    handler = Sink()
    controller = Controller(
        handler,
        hostname=RECEIVER_ADDRESS,
        port=RECEIVER_PORT,
        server_hostname=RECEIVER_HOST,
        tls_context=context,
    )
    controller.start()
    # Mail that found no receiver earlier makes Postfix skip the destination
    # for a while; this has it try again now.
    lab.mail.flush()
    try:
        yield handler
    finally:
        controller.stop()


def message(from_address: str, to_address: str) -> tuple[str, bytes]:
    """(Message-ID, message) of a small, unique test message."""
    domain = from_address.rpartition("@")[2]
    message_id = f"<{uuid.uuid4().hex}@{domain}>"
    text = (
        f"From: Lab Sender <{from_address}>\r\n"
        f"To: <{to_address}>\r\n"
        f"Subject: send test from {domain}\r\n"
        f"Date: {email.utils.formatdate(localtime=False)}\r\n"
        f"Message-ID: {message_id}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        f"A test message from the mailcheck lab, sent as {domain}.\r\n"
    )
    return message_id, text.encode()


@pytest.fixture(scope="module")
def arrivals(lab: Lab, sink: Sink) -> dict[str, Arrival]:
    """One message from each Sender, sent at once and then waited for together."""
    sent = {}
    for entry in SENDERS:
        address = f"lab@{entry.domain}"
        recipient = f"st-{uuid.uuid4().hex[:12]}@{RECEIVER_DOMAIN}"
        message_id, data = message(address, recipient)
        lab.mail.send(address, [recipient], data)
        sent[entry.domain] = message_id
    found = {}
    deadline = time.monotonic() + ARRIVAL_TIMEOUT
    for domain, message_id in sent.items():
        arrival = sink.wait(message_id, max(0.0, deadline - time.monotonic()))
        if arrival is not None:
            found[domain] = arrival
    missing = sorted(set(sent) - set(found))
    assert not missing, (
        f"no message arrived from {', '.join(missing)} within {ARRIVAL_TIMEOUT:.0f}s\n"
        + proc.log_tail(lab.mail.postfix_log, 40)
    )
    return found


def txt_lookup(name: bytes, timeout: float = DNS_TIMEOUT) -> bytes | None:
    """dkimpy's dnsfunc, asking the lab's NSD (over TCP: keys outgrow 512 bytes)."""
    query = dns.message.make_query(name.decode().rstrip(".") + ".", "TXT")
    response = dns.query.tcp(query, NS_ADDRESS, timeout=timeout)
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.TXT:
            return b"".join(next(iter(rrset)).strings)
    return None


def resolver() -> dns.resolver.Resolver:
    lab_resolver = dns.resolver.Resolver(configure=False)
    lab_resolver.nameservers = [NS_ADDRESS]
    lab_resolver.lifetime = DNS_TIMEOUT
    return lab_resolver


def lookup(name: str, rdtype: str) -> list[str]:
    """The records' text, or [] if the name or type does not exist."""
    try:
        answer = resolver().resolve(name, rdtype)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    return [rdata.to_text() for rdata in answer]


def signature_tags(data: bytes) -> dict[str, str] | None:
    """The tags of the message's DKIM-Signature, or None if it has none."""
    header = email.message_from_bytes(data).get("DKIM-Signature")
    if header is None:
        return None
    tags = (part.split("=", 1) for part in re.sub(r"\s+", "", str(header)).split(";") if part)
    return {name: value for name, value in tags}


def check_signature(entry: Sender, data: bytes) -> None:
    tags = signature_tags(data)
    if entry.dkim == "none":
        assert tags is None, "unsigned mail arrived with a DKIM-Signature"
        return
    assert tags is not None, f"mail from {entry.domain} arrived without a DKIM-Signature"
    assert (tags["d"], tags["s"]) == (entry.domain, DKIM_SELECTOR)
    verified = dkim.verify(data, dnsfunc=txt_lookup)
    assert verified is (entry.dkim == "sign"), (entry.dkim, data.decode(errors="replace"))


def check_arrival(entry: Sender, arrival: Arrival, envelope_from: str) -> None:
    assert arrival.peer == entry.address
    assert arrival.helo == entry.helo
    assert (arrival.cipher is not None) is entry.tls, arrival.cipher
    assert arrival.mail_from == envelope_from
    assert all(r.endswith(f"@{RECEIVER_DOMAIN}") for r in arrival.rcpt_tos)
    check_signature(entry, arrival.data)


@pytest.mark.parametrize("entry", SENDERS, ids=[s.domain for s in SENDERS])
def test_each_sender_delivers_as_it_should(entry: Sender, arrivals: dict[str, Arrival]) -> None:
    check_arrival(entry, arrivals[entry.domain], f"lab@{entry.domain}")


def test_alice_reaches_the_receiver_through_healthy_submission(lab: Lab, sink: Sink) -> None:
    recipient = f"st-{uuid.uuid4().hex[:12]}@{RECEIVER_DOMAIN}"
    message_id, data = message(LAB_USER, recipient)
    with smtp_session(lab.mail, HEALTHY_SENDER.address, 587) as client:  # STARTTLS
        client.login(LAB_USER, LAB_PASSWORD)
        assert client.sendmail(LAB_USER, [recipient], data) == {}
    arrival = sink.wait(message_id)
    assert arrival is not None, proc.log_tail(lab.mail.postfix_log, 40)
    check_arrival(HEALTHY_SENDER, arrival, LAB_USER)


def test_sendmail_refuses_no_recipients(lab: Lab) -> None:
    with pytest.raises(ValueError):
        lab.mail.send("lab@send-ok.test", [], b"Subject: x\r\n\r\nx\r\n")


def test_the_receiver_is_in_dns(lab: Lab) -> None:
    assert lookup(RECEIVER_DOMAIN, "MX") == [f"10 {RECEIVER_HOST}."]
    assert lookup(RECEIVER_HOST, "A") == [RECEIVER_ADDRESS]
    reverse = dns.reversename.from_address(RECEIVER_ADDRESS).to_text()
    assert lookup(reverse, "PTR") == [f"{RECEIVER_HOST}."]


@pytest.mark.parametrize(
    "entry", [*SENDERS, HEALTHY_SENDER], ids=[s.domain for s in (*SENDERS, HEALTHY_SENDER)]
)
def test_each_sender_has_its_dns(lab: Lab, entry: Sender) -> None:
    reverse = dns.reversename.from_address(entry.address).to_text()
    if entry.ptr is None:
        assert lookup(reverse, "PTR") == []
    else:
        assert lookup(reverse, "PTR") == [f"{entry.ptr}."]
        confirmed = entry.address in lookup(entry.ptr, "A")
        assert confirmed is (entry.domain != "send-ptrmismatch.test")
    if entry.helo != "localhost":
        assert lookup(entry.helo, "A") == [entry.address]
    assert f'"{entry.spf}"' in lookup(entry.domain, "TXT")
    assert lookup(f"_dmarc.{entry.domain}", "TXT")[0].startswith('"v=DMARC1; p=reject')
    key = lookup(f"{DKIM_SELECTOR}._domainkey.{entry.domain}", "TXT")
    assert bool(key) is (entry.dkim != "none")
    listed = lookup(f"{'.'.join(reversed(entry.address.split('.')))}.{BLOCKLIST_ZONE}", "A")
    assert listed == (["127.0.0.2"] if entry.domain == "send-listed.test" else [])


def test_sender_lookup() -> None:
    assert sender("send-ok.test").address == "127.1.40.1"
    assert sender("healthy.test") is HEALTHY_SENDER
    with pytest.raises(KeyError):
        sender("nowhere.test")
