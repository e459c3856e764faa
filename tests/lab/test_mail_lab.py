"""The mail lab itself, probed with raw sockets and Python's ssl, smtplib,
imaplib and poplib: every listener behaves as tests/lab/mail.py says, and mail
to each lab account goes where it should, so engine tests can rely on it."""

from __future__ import annotations

import base64
import datetime
import email
import imaplib
import os
import poplib
import smtplib
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .mail import (
    LAB_ACCOUNTS,
    LAB_PASSWORD,
    LAB_USER,
    LISTENERS,
    SILENT_ADDRESSES,
    SLOW_DELIVERY_SECONDS,
    SUB_CLEARTEXT_ADDRESS,
    WEAK_CIPHER,
    Listener,
    MailLab,
    MailLabError,
    find_tool,
    iptables_rules,
    listener_at,
    running_mail_lab,
)
from .pki import CertSpec, LabPKI

pytestmark = pytest.mark.lab

TIMEOUT = 5.0
SMTP = ("smtp", "submission", "submissions")
IMAP = ("imap", "imaps")
POP3 = ("pop3", "pop3s")

# Certificate verification results (OpenSSL X509_V_ERR_*) per scenario.
EXPECTED_VERIFY_CODE = {
    "tls-expired.test": {10},  # certificate has expired
    "imap-expired.test": {10},
    "tls-future.test": {9},  # certificate is not yet valid
    "tls-wrongname.test": {62},  # hostname mismatch
    "tls-selfsigned.test": {18},  # self-signed certificate
    "tls-nochain.test": {20},  # unable to get local issuer certificate
    "tls-unknownca.test": {19, 20},  # self-signed in chain / no local issuer
}
# Handshakes a default client cannot even complete; tested on their own.
NOT_FOR_DEFAULT_CLIENTS = {"tls-weakcipher.test", "tls-weakkey.test"}
PLAINTEXT_LOGIN_ALLOWED = {"127.1.23.3", "127.1.23.4"}  # Dovecot disable_plaintext_auth=no
AUTH_BEFORE_TLS = {"smtp-authplain.test", "sub-cleartext.test"}  # smtpd_tls_auth_only=no


@pytest.fixture(scope="session")
def mail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailLab]:
    with running_mail_lab(tmp_path_factory.mktemp("mail-lab")) as lab:
        yield lab


def verifying_context(lab: MailLab, *extra_cas: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(lab.ca_file))
    for ca in extra_cas:
        context.load_verify_locations(cafile=str(ca))
    return context


def anything_goes(version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A client that completes any handshake: no verification, every cipher, any version."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("ALL:@SECLEVEL=0")
    if version is not None:
        context.minimum_version = context.maximum_version = version
    return context


class Client:
    """A line-based conversation over TCP that can switch to TLS."""

    def __init__(self, address: str, port: int) -> None:
        self.sock: socket.socket = socket.create_connection((address, port), timeout=TIMEOUT)
        self.file = self.sock.makefile("rb")

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()
        self.sock.close()

    def tls(self, context: ssl.SSLContext, server_hostname: str | None) -> ssl.SSLSocket:
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)
        self.file = self.sock.makefile("rb")
        return self.sock

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r\n")

    def line(self) -> str:
        data = self.file.readline()
        assert data, "connection closed"
        return data.decode().rstrip("\r\n")

    def smtp(self, command: str | None = None) -> tuple[int, list[str]]:
        """(code, text lines) of one SMTP reply, after sending command if given."""
        if command is not None:
            self.send(command)
        lines = []
        while True:
            line = self.line()
            lines.append(line[4:])
            if line[3:4] != "-":
                return int(line[:3]), lines

    def imap(self, command: str) -> list[str]:
        self.send(f"t {command}")
        lines = []
        while not (line := self.line()).startswith("t "):
            lines.append(line)
        assert line.startswith("t OK"), (command, line)
        return lines

    def pop3_capa(self) -> list[str]:
        self.send("CAPA")
        assert self.line().startswith("+OK")
        capabilities = []
        while (line := self.line()) != ".":
            capabilities.append(line)
        return capabilities


def open_session(lab: MailLab, entry: Listener) -> Client:
    """Connected, past implicit TLS if the listener wants it (not verified here)."""
    client = Client(*entry.endpoint)
    if entry.implicit_tls:
        client.tls(anything_goes(), entry.host)
    return client


def starttls(client: Client, entry: Listener) -> None:
    """Send the protocol's STARTTLS and read the go-ahead; the handshake is the caller's."""
    if entry.protocol in SMTP:
        client.smtp()
        client.smtp("EHLO client.lab.test")
        code, text = client.smtp("STARTTLS")
        assert code == 220, text
    elif entry.protocol in IMAP:
        client.line()
        client.send("s STARTTLS")
        assert client.line().startswith("s OK")
    else:
        client.line()
        client.send("STLS")
        assert client.line().startswith("+OK")


def handshake(
    lab: MailLab, entry: Listener, context: ssl.SSLContext, name: str | None = None
) -> ssl.SSLSocket:
    client = Client(*entry.endpoint)
    if not entry.implicit_tls:
        starttls(client, entry)
    return client.tls(context, name or entry.host)


def ids(entries: list[Listener]) -> list[str]:
    return [f"{e.domain}-{e.address}:{e.port}" for e in entries]


SMTP_LISTENERS = [e for e in LISTENERS if e.protocol in SMTP]
IMAP_LISTENERS = [e for e in LISTENERS if e.protocol in IMAP]
POP3_LISTENERS = [e for e in LISTENERS if e.protocol in POP3]
TLS_LISTENERS = [
    e
    for e in LISTENERS
    if e.cert is not None
    and e.domain not in NOT_FOR_DEFAULT_CLIENTS
    and e.domain != "smtp-tlsfail.test"
    and e.options.get("smtpd_tls_wrappermode") != "no"
]


# -- the PKI, on its own -------------------------------------------------------------


def test_pki_builds_both_hierarchies_and_leaves(tmp_path: Path) -> None:
    pki = LabPKI(tmp_path)
    pki.build(
        [
            CertSpec("good", ("mx.a.test", "a.test")),
            CertSpec("nochain", ("mx.b.test",), send_chain=False),
            CertSpec("self", ("mx.c.test",), issuer="self"),
            CertSpec("other", ("mx.d.test",), issuer="untrusted-intermediate", key="ec256"),
            CertSpec("old", ("mx.e.test",), datetime.timedelta(-400), datetime.timedelta(-2)),
        ]
    )
    (root,) = x509.load_pem_x509_certificates(pki.ca_file.read_bytes())
    assert root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "mailcheck lab root CA"
    )
    assert root.issuer == root.subject
    now = datetime.datetime.now(datetime.UTC)
    assert root.not_valid_before_utc < now - datetime.timedelta(hours=23)
    assert root.not_valid_after_utc > now + datetime.timedelta(days=3640)

    leaf, intermediate = x509.load_pem_x509_certificates(pki.cert_path("good").read_bytes())
    assert intermediate.issuer == root.subject
    assert leaf.issuer == intermediate.subject
    leaf.verify_directly_issued_by(intermediate)
    intermediate.verify_directly_issued_by(root)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["mx.a.test", "a.test"]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = intermediate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    key = leaf.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048

    assert len(x509.load_pem_x509_certificates(pki.cert_path("nochain").read_bytes())) == 1
    (self_signed,) = x509.load_pem_x509_certificates(pki.cert_path("self").read_bytes())
    assert self_signed.issuer == self_signed.subject
    other, other_intermediate = x509.load_pem_x509_certificates(pki.cert_path("other").read_bytes())
    assert isinstance(other.public_key(), ec.EllipticCurvePublicKey)
    (untrusted_root,) = x509.load_pem_x509_certificates(pki.untrusted_ca_file.read_bytes())
    assert other_intermediate.issuer == untrusted_root.subject != root.subject
    (old, _) = x509.load_pem_x509_certificates(pki.cert_path("old").read_bytes())
    assert old.not_valid_after_utc < now - datetime.timedelta(days=1)

    # Rebuilding keeps the keys and issues new certificates.
    key_before = pki.key_path("good").read_bytes()
    pki.build([CertSpec("good", ("mx.a.test",))])
    assert pki.key_path("good").read_bytes() == key_before
    (root_again,) = x509.load_pem_x509_certificates(pki.ca_file.read_bytes())
    assert root_again.serial_number != root.serial_number


# -- greetings and capabilities ------------------------------------------------------


@pytest.mark.parametrize("entry", SMTP_LISTENERS, ids=ids(SMTP_LISTENERS))
def test_smtp_listener_greets_and_offers_what_it_should(mail: MailLab, entry: Listener) -> None:
    with open_session(mail, entry) as client:
        code, greeting = client.smtp()
        if entry.domain == "smtp-reject.test":
            assert code == 554 and "Client host rejected" in greeting[0]
            assert client.smtp("EHLO client.lab.test")[0] == 503
            return
        name = entry.options.get("myhostname", entry.host)
        assert code == 220 and greeting[0].split()[0] == name

        code, ehlo = client.smtp("EHLO client.lab.test")
        assert code == 250 and ehlo[0] == name
        keywords = {line.split()[0].upper() for line in ehlo[1:]}
        offers_starttls = entry.cert is not None and not entry.implicit_tls
        assert ("STARTTLS" in keywords) == offers_starttls
        auth_wanted = entry.protocol != "smtp" and entry.domain == "healthy.test"
        auth_before_tls = entry.domain in AUTH_BEFORE_TLS or (auth_wanted and entry.implicit_tls)
        assert ("AUTH" in keywords) == auth_before_tls
        if not offers_starttls:
            return

        code, text = client.smtp("STARTTLS")
        if entry.domain == "smtp-tlsfail.test":
            assert (code, text) == (454, ["4.7.0 TLS not available due to local problem"])
            return
        assert code == 220
        client.tls(anything_goes(), entry.host)
        code, ehlo = client.smtp("EHLO client.lab.test")
        keywords = {line.split()[0].upper() for line in ehlo[1:]}
        assert "STARTTLS" not in keywords
        assert ("AUTH" in keywords) == (auth_wanted or entry.domain in AUTH_BEFORE_TLS)


def test_smtp_reject_greeting_line(mail: MailLab) -> None:
    with Client("127.1.20.4", 25) as client:
        assert (
            client.line() == "554 5.7.1 <unknown[127.0.0.1]>: Client host rejected: Access denied"
        )


def test_submission_demands_tls_before_anything(mail: MailLab) -> None:
    with Client("127.1.1.10", 587) as client:
        client.smtp()
        client.smtp("EHLO client.lab.test")
        code, text = client.smtp("MAIL FROM:<alice@healthy.test>")
        assert code == 530 and "STARTTLS" in text[0]


@pytest.mark.parametrize("entry", IMAP_LISTENERS, ids=ids(IMAP_LISTENERS))
def test_imap_listener_capabilities(mail: MailLab, entry: Listener) -> None:
    with open_session(mail, entry) as client:
        assert client.line().startswith("* OK")
        (line,) = client.imap("CAPABILITY")
        capabilities = set(line.split()[2:])
    assert ("STARTTLS" in capabilities) == (entry.cert is not None and not entry.implicit_tls)
    login_disabled = not entry.implicit_tls and entry.address not in PLAINTEXT_LOGIN_ALLOWED
    assert ("LOGINDISABLED" in capabilities) == login_disabled
    assert ("AUTH=PLAIN" in capabilities) == (not login_disabled)


@pytest.mark.parametrize("entry", POP3_LISTENERS, ids=ids(POP3_LISTENERS))
def test_pop3_listener_capabilities(mail: MailLab, entry: Listener) -> None:
    with open_session(mail, entry) as client:
        assert client.line().startswith("+OK")
        capabilities = {line.split()[0] for line in client.pop3_capa()}
    assert ("STLS" in capabilities) == (entry.cert is not None and not entry.implicit_tls)
    user_allowed = entry.implicit_tls or entry.address in PLAINTEXT_LOGIN_ALLOWED
    assert ("USER" in capabilities) == user_allowed


@pytest.mark.parametrize("address", ["127.1.1.11", "127.1.23.4"])
def test_imap_and_pop3_offer_login_after_starttls(mail: MailLab, address: str) -> None:
    imap, pop3 = listener_at(address, 143), listener_at(address, 110)
    with Client(*imap.endpoint) as client:
        starttls(client, imap)
        client.tls(verifying_context(mail), imap.host)
        (line,) = client.imap("CAPABILITY")
        assert "AUTH=PLAIN" in line.split() and "LOGINDISABLED" not in line.split()
    with Client(*pop3.endpoint) as client:
        starttls(client, pop3)
        client.tls(verifying_context(mail), pop3.host)
        assert "USER" in {line.split()[0] for line in client.pop3_capa()}


# -- certificates and TLS ------------------------------------------------------------


@pytest.mark.parametrize("entry", TLS_LISTENERS, ids=ids(TLS_LISTENERS))
def test_certificate_verifies_or_fails_as_designed(mail: MailLab, entry: Listener) -> None:
    expected = EXPECTED_VERIFY_CODE.get(entry.domain)
    try:
        with handshake(mail, entry, verifying_context(mail)) as tls:
            version = tls.version()
    except ssl.SSLCertVerificationError as exc:
        assert exc.verify_code in (expected or ()), exc.verify_message
        return
    assert expected is None, f"verified, expected error {expected}"
    assert version in ("TLSv1.2", "TLSv1.3")


def test_expiring_certificate_has_ten_days_left(mail: MailLab) -> None:
    with handshake(mail, listener_at("127.1.21.3", 25), verifying_context(mail)) as tls:
        cert = tls.getpeercert()
    assert cert is not None
    left = ssl.cert_time_to_seconds(str(cert["notAfter"])) - time.time()
    assert 9 * 86400 < left < 11 * 86400


def test_wrongname_certificate_is_for_another_name(mail: MailLab) -> None:
    entry = listener_at("127.1.21.4", 25)
    with handshake(mail, entry, verifying_context(mail), "other.example.net") as tls:
        assert tls.getpeercert()


def test_nochain_verifies_once_the_intermediate_is_known(mail: MailLab) -> None:
    context = verifying_context(mail, mail.pki.cert_path("intermediate"))
    with handshake(mail, listener_at("127.1.21.6", 25), context) as tls:
        assert tls.getpeercert()


def test_unknownca_chain_is_complete_under_its_own_root(mail: MailLab) -> None:
    context = ssl.create_default_context(cafile=str(mail.pki.untrusted_ca_file))
    with handshake(mail, listener_at("127.1.21.7", 25), context) as tls:
        assert tls.getpeercert()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["TLSv1", "TLSv1.1"]
)
def test_legacy_accepts_old_tls_and_healthy_does_not(
    mail: MailLab, version: ssl.TLSVersion
) -> None:
    with handshake(mail, listener_at("127.1.21.8", 25), anything_goes(version)) as tls:
        assert tls.version() == version.name.replace("_", ".")
    with pytest.raises(ssl.SSLError):
        handshake(mail, listener_at("127.1.1.1", 25), anything_goes(version))


def test_legacy_still_speaks_modern_tls(mail: MailLab) -> None:
    with handshake(mail, listener_at("127.1.21.8", 25), verifying_context(mail)) as tls:
        assert tls.version() == "TLSv1.3"


def test_weakcipher_negotiates_only_the_weak_cipher(mail: MailLab) -> None:
    entry = listener_at("127.1.21.9", 25)
    with handshake(mail, entry, anything_goes()) as tls:
        assert tls.version() == "TLSv1.2"
        cipher = tls.cipher()
        assert cipher is not None and cipher[0] == WEAK_CIPHER
    # Everything but that cipher fails. Offering it is the build's choice:
    # Debian's own python3.11 keeps OpenSSL's default list, which has it.
    context = verifying_context(mail)
    context.set_ciphers(f"DEFAULT:!{WEAK_CIPHER}")
    with pytest.raises(ssl.SSLError):
        handshake(mail, entry, context)


def test_a_doveconf_error_line_with_a_zero_exit_does_not_stop_the_lab(
    mail: MailLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A minimal root without /etc/mtab makes doveconf print an Error: line
    about the machine and exit 0; the lab validates its configs regardless,
    and still fails on a config doveconf rejects (non-zero exit)."""
    real = find_tool("doveconf")
    wrapper = tmp_path / "doveconf"
    wrapper.write_text(
        f'#!/bin/sh\n"{real}" "$@"; status=$?\n'
        'echo "doveconf: Error: open(/etc/mtab) failed: No such file or directory" >&2\n'
        'exit "${FAIL:-$status}"\n'
    )
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert find_tool("doveconf") == str(wrapper)
    mail._validate()  # no MailLabError
    monkeypatch.setenv("FAIL", "89")
    with pytest.raises(MailLabError, match=r"Dovecot config \S+ is invalid"):
        mail._validate()


def test_weakkey_serves_a_1024_bit_rsa_key(mail: MailLab) -> None:
    with handshake(mail, listener_at("127.1.21.10", 25), anything_goes()) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    key = x509.load_der_x509_certificate(der).public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 1024


def test_plain465_speaks_smtp_not_tls(mail: MailLab) -> None:
    with Client("127.1.21.11", 465) as client, pytest.raises(ssl.SSLError):
        client.tls(anything_goes(), "mx.tls-plain465.test")
    with Client("127.1.21.11", 465) as client:
        assert client.smtp()[0] == 220


# -- where nothing answers -----------------------------------------------------------

SILENT = [(s.address, port, s.how) for s in SILENT_ADDRESSES for port in s.ports]


@pytest.mark.parametrize(("address", "port", "how"), SILENT, ids=[f"{a}:{p}" for a, p, _ in SILENT])
def test_silent_addresses_refuse_or_drop(mail: MailLab, address: str, port: int, how: str) -> None:
    started = time.monotonic()
    expected = TimeoutError if how == "filtered" else ConnectionRefusedError
    with pytest.raises(expected):
        socket.create_connection((address, port), timeout=0.5).close()
    if how != "filtered":
        assert time.monotonic() - started < 0.4  # refused at once, not timed out


def test_iptables_drops_exactly_the_filtered_addresses(mail: MailLab) -> None:
    dropped = {
        rule.split("-d ")[1].split()[0] for rule in iptables_rules() if rule.endswith("-j DROP")
    }
    filtered = {f"{s.address}/32" for s in SILENT_ADDRESSES if s.how == "filtered"}
    assert dropped == filtered


# -- mail actually flows -------------------------------------------------------------


def test_mail_to_alice_arrives_in_her_imap_inbox(mail: MailLab) -> None:
    token = uuid.uuid4().hex
    with Client("127.1.1.1", 25) as client:
        starttls(client, listener_at("127.1.1.1", 25))
        client.tls(verifying_context(mail), "mx1.healthy.test")
        client.smtp("EHLO client.lab.test")
        assert client.smtp("MAIL FROM:<bob@example.net>")[0] == 250
        assert client.smtp(f"RCPT TO:<{LAB_USER}>")[0] == 250
        assert client.smtp("RCPT TO:<nobody@example.net>")[0] == 554  # no relaying
        assert client.smtp("DATA")[0] == 354
        code, text = client.smtp(f"Subject: {token}\r\n\r\nhello from the lab\r\n.")
        assert code == 250, text

    context = verifying_context(mail)
    context.check_hostname = False  # imaplib would check the address, not imap.healthy.test
    deadline = time.monotonic() + 10
    with imaplib.IMAP4_SSL("127.1.1.11", 993, ssl_context=context, timeout=TIMEOUT) as imap:
        imap.login(LAB_USER, LAB_PASSWORD)
        while True:
            imap.select("INBOX")
            found = imap.search(None, "SUBJECT", token)[1][0].split()
            if found or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert found, "the message did not reach the mailbox"


def test_submission_authenticates_against_dovecot(mail: MailLab) -> None:
    entry = listener_at("127.1.1.10", 465)
    credentials = base64.b64encode(f"\0{LAB_USER}\0{LAB_PASSWORD}".encode()).decode()
    with Client(*entry.endpoint) as client:
        client.tls(verifying_context(mail), entry.host)
        client.smtp()
        client.smtp("EHLO client.lab.test")
        assert client.smtp(f"AUTH PLAIN {credentials}")[0] == 235


# -- accounts: logging in, and mail to each of them ------------------------------------

SUBMISSION = ("127.1.1.10", 587)
LOGINS = [  # healthy.test's listeners where every account logs in
    ("127.1.1.10", 587),
    ("127.1.1.10", 465),
    ("127.1.1.11", 143),
    ("127.1.1.11", 993),
    ("127.1.1.11", 110),
    ("127.1.1.11", 995),
]


def lab_context(lab: MailLab) -> ssl.SSLContext:
    """Verifies the chain up to the lab root, but not the name: smtplib,
    imaplib and poplib would check the address they connect to, not
    smtp.healthy.test/imap.healthy.test (which only the lab DNS knows)."""
    context = verifying_context(lab)
    context.check_hostname = False
    return context


def smtp_session(lab: MailLab, address: str, port: int) -> smtplib.SMTP:
    """smtplib, past implicit TLS or STARTTLS, whichever the listener wants."""
    if listener_at(address, port).implicit_tls:
        return smtplib.SMTP_SSL(address, port, context=lab_context(lab), timeout=TIMEOUT)
    client = smtplib.SMTP(address, port, timeout=TIMEOUT)
    client.starttls(context=lab_context(lab))
    return client


def imap_session(lab: MailLab, address: str, port: int) -> imaplib.IMAP4:
    if listener_at(address, port).implicit_tls:
        return imaplib.IMAP4_SSL(address, port, ssl_context=lab_context(lab), timeout=TIMEOUT)
    client = imaplib.IMAP4(address, port, timeout=TIMEOUT)
    client.starttls(ssl_context=lab_context(lab))
    return client


def pop3_session(lab: MailLab, address: str, port: int) -> poplib.POP3:
    if listener_at(address, port).implicit_tls:
        return poplib.POP3_SSL(address, port, context=lab_context(lab), timeout=TIMEOUT)
    client = poplib.POP3(address, port, timeout=TIMEOUT)
    client.stls(context=lab_context(lab))
    return client


def submit(lab: MailLab, sender: str, recipient: str, token: str) -> None:
    """One message from LAB_ACCOUNTS[sender] to recipient (an address), via
    healthy.test's submission on 587: STARTTLS, AUTH as the sender."""
    address, password = LAB_ACCOUNTS[sender]
    message = (
        f"From: <{address}>\r\nTo: <{recipient}>\r\nSubject: {token}\r\n\r\n"
        "a round trip through the lab\r\n"
    )
    with smtp_session(lab, *SUBMISSION) as client:
        client.login(address, password)
        assert client.sendmail(address, [recipient], message) == {}  # no recipient refused


def arrival(lab: MailLab, user: str, token: str, timeout: float) -> tuple[float, bytes] | None:
    """(when, the message) once a message with token is in user's Maildir, by
    time.monotonic(); None if none comes within timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        for message in lab.messages(user):
            if token.encode() in message:
                return now, message
        if now > deadline:
            return None
        time.sleep(0.05)


def imap_finds(lab: MailLab, user: str, token: str) -> bool:
    address, password = LAB_ACCOUNTS[user]
    with imap_session(lab, "127.1.1.11", 993) as imap:
        imap.login(address, password)
        imap.select("INBOX", readonly=True)
        return bool(imap.search(None, "SUBJECT", token)[1][0].split())


@pytest.mark.parametrize(("address", "port"), LOGINS, ids=[f"{a}:{p}" for a, p in LOGINS])
@pytest.mark.parametrize("user", sorted(LAB_ACCOUNTS))
def test_every_account_logs_in_at_healthy(
    mail: MailLab, user: str, address: str, port: int
) -> None:
    login, password = LAB_ACCOUNTS[user]
    entry = listener_at(address, port)
    if entry.protocol in SMTP:
        with smtp_session(mail, address, port) as smtp:
            assert smtp.login(login, password)[0] == 235
    elif entry.protocol in IMAP:
        with imap_session(mail, address, port) as imap:
            assert imap.login(login, password)[0] == "OK"
            assert imap.select("INBOX", readonly=True)[0] == "OK"
    else:
        pop3 = pop3_session(mail, address, port)
        try:
            pop3.user(login)
            assert pop3.pass_(password).startswith(b"+OK")
            pop3.stat()
        finally:
            pop3.quit()


@pytest.mark.parametrize(
    ("user", "password"),
    [("alice", "wrong-password"), ("carol", LAB_ACCOUNTS["dave"][1])],
    ids=["alice-wrong", "carol-with-daves"],
)
def test_a_wrong_password_is_refused(mail: MailLab, user: str, password: str) -> None:
    login = LAB_ACCOUNTS[user][0]
    with (
        smtp_session(mail, *SUBMISSION) as smtp,
        pytest.raises(smtplib.SMTPAuthenticationError) as refused,
    ):
        smtp.login(login, password)
    assert refused.value.smtp_code == 535
    entry = listener_at("127.1.1.11", 993)
    with open_session(mail, entry) as client:
        assert client.line().startswith("* OK")
        client.send(f't LOGIN "{login}" "{password}"')
        while (line := client.line()).startswith("* "):
            pass
    assert line.startswith("t NO "), line


def test_alice_mails_herself_through_submission_and_dovecot_lmtp(mail: MailLab) -> None:
    token = uuid.uuid4().hex
    submit(mail, "alice", LAB_USER, token)
    arrived = arrival(mail, "alice", token, timeout=10)
    assert arrived is not None, "the message did not reach alice's Maildir"
    received = email.message_from_bytes(arrived[1]).get_all("Received")
    assert received is not None
    assert " with LMTP" in received[0], received[0]  # Dovecot's, on delivery
    assert "by smtp.healthy.test (Postfix) with ESMTPSA" in received[1], received[1]
    assert imap_finds(mail, "alice", token)


def test_mail_to_dave_arrives_after_the_slow_delay(mail: MailLab) -> None:
    token = uuid.uuid4().hex
    started = time.monotonic()  # before the message exists: no arrival can precede it
    submit(mail, "alice", LAB_ACCOUNTS["dave"][0], token)
    arrived = arrival(mail, "dave", token, timeout=20)
    assert arrived is not None, "the message did not reach dave's Maildir within 20 s"
    assert arrived[0] - started >= SLOW_DELIVERY_SECONDS
    assert imap_finds(mail, "dave", token)


def test_mail_to_carol_is_accepted_then_stays_queued(mail: MailLab) -> None:
    token = uuid.uuid4().hex
    carol = LAB_ACCOUNTS["carol"][0]
    submit(mail, "alice", carol, token)  # accepted at RCPT and at the end of DATA
    assert arrival(mail, "carol", token, timeout=3) is None
    assert mail.queued() >= 1 and mail.queued("carol") >= 1
    reasons = [
        rcpt.get("delay_reason", "")
        for entry in mail.queue()
        for rcpt in cast(list[dict[str, str]], entry["recipients"])
        if rcpt["address"] == carol
    ]
    assert any("never takes mail" in reason for reason in reasons), reasons
    # Deferred, not bounced: no report about it came back to alice.
    assert arrival(mail, "alice", token, timeout=0) is None


@pytest.mark.parametrize("recipient", ["bob@healthy.test", "bob@slow.test"])
def test_mail_to_unknown_users_is_refused_at_rcpt(mail: MailLab, recipient: str) -> None:
    address, password = LAB_ACCOUNTS["alice"]
    with smtp_session(mail, *SUBMISSION) as smtp:
        smtp.login(address, password)
        smtp.mail(address)
        code, text = smtp.rcpt(recipient)
    assert code == 550 and b"User unknown" in text


def test_cleartext_submission_offers_auth_without_tls(mail: MailLab) -> None:
    entry = listener_at(SUB_CLEARTEXT_ADDRESS, 587)
    assert (entry.domain, entry.host, entry.cert) == (
        "sub-cleartext.test",
        "smtp.sub-cleartext.test",
        None,
    )
    with smtplib.SMTP(SUB_CLEARTEXT_ADDRESS, 587, timeout=TIMEOUT) as smtp:
        code, name = smtp.ehlo("client.lab.test")
        assert code == 250 and name.split(b"\n")[0] == b"smtp.sub-cleartext.test"
        assert not smtp.has_extn("starttls")
        assert set(smtp.esmtp_features["auth"].split()) == {"PLAIN", "LOGIN"}
        assert smtp.login(LAB_USER, LAB_PASSWORD)[0] == 235  # accepted in the clear
