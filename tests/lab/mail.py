"""Real mail servers for the lab: Postfix and Dovecot, one listener per scenario.

MailLab(state_dir).start() makes a fresh PKI (tests/lab/pki.py), writes a
Postfix config directory and a Dovecot config into state_dir, validates them,
starts Dovecot (it serves SASL and LMTP to Postfix), then Postfix, and adds the
MAILCHECK-LAB iptables chain that drops packets to the "timeout" addresses.
Nothing reads or writes /etc/postfix or /etc/dovecot, and every listener binds
one explicit 127.1.x.y address, so the system's own mail servers, if any, are
left alone as long as they keep off 127.1.0.0/16.

LISTENERS is the table of what answers where; SILENT_ADDRESSES lists the
scenario addresses where no lab server answers. The DNS side of each scenario
(MX, A, PTR, SRV) is in tests/lab/zones.py.

Mail really flows: Postfix accepts mail for LAB_ACCOUNTS (alice@healthy.test,
carol@defer.test, dave@slow.test) and hands it to Dovecot over LMTP, into
Maildirs that IMAP and POP3 serve (MailLab.mailbox(), MailLab.messages()).
Two domains differ: mail to DEFERRED_DOMAIN goes to Postfix's retry transport
and stays queued (MailLab.queued()) for days, so it never bounces in a test
session; mail to SLOW_DOMAIN goes to a pipe transport that sleeps
SLOW_DELIVERY_SECONDS and then runs dovecot-lda. Every account logs in with
its full address at healthy.test's Dovecot and submission servers.

Mail also leaves, for the send test (tests/lab/senders.py): mail to
RECEIVER_DOMAIN whose envelope sender is in a Sender's domain goes to
[RECEIVER_ADDRESS]:25, from that Sender's address, with its HELO name and TLS
setting (one smtp(8) transport per Sender, chosen by
sender_dependent_default_transport_maps); mail to any other domain outside
MAIL_DOMAINS is still refused or bounced. MailLab.send() injects a message
with Postfix's sendmail. OpenDKIM (/usr/sbin/opendkim, a milter on
MILTER_ADDRESS:MILTER_PORT, started and stopped with Postfix) signs what
sendmail injects and what healthy.test's submission server (127.1.1.10)
accepts, by the From: domain, with the keys of tests/lab/dkim.py.

Layout of state_dir: pki/ (certificates; pki/ca.pem is the trusted root),
postfix/ (main.cf, master.cf: `postfix -c state_dir/postfix ...`),
postfix-queue/ (emptied at every start), dovecot/ (dovecot.conf, run/ =
base_dir), postfix.log, dovecot.log, dkim/ (DKIM keys: DKIMKeys), opendkim/
(its config, tables and pid file), opendkim.log. What daemons reach after
dropping root (Postfix's data directory, the mailboxes, Dovecot's user file, Postfix's
transport and recipient tables, dovecot-lda's config, log and userdb socket)
is in state_dir/shared, or in /tmp/mailcheck-lab-<hash> when an ancestor of
state_dir is not searchable by other users (pytest's tmp dirs are 0700).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Literal

from . import proc
from .dkim import DKIMKeys
from .pki import CertSpec, LabPKI
from .senders import (
    ALL_SENDERS,
    DKIM_SELECTOR,
    MILTER_ADDRESS,
    MILTER_PORT,
    RECEIVER_ADDRESS,
    RECEIVER_DOMAIN,
    RECEIVER_HOST,
    RECEIVER_PORT,
    SIGNING_DOMAINS,
)

Protocol = Literal["smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s"]
Server = Literal["postfix", "dovecot"]
Silence = Literal["refused", "filtered", "silent"]

LAB_NETWORK = "127.1.0.0/16"
LAB_CA_FILE = Path("pki") / "ca.pem"  # relative to a MailLab's state_dir
IPTABLES_CHAIN = "MAILCHECK-LAB"

LAB_USER = "alice@healthy.test"
LAB_PASSWORD = "lab-password-1"
# The lab's mail users: name -> (address, password). Each logs in with the full
# address at healthy.test's IMAP/POP3 (127.1.1.11) and submission (127.1.1.10).
# Throwaway lab values, not secrets.
LAB_ACCOUNTS: dict[str, tuple[str, str]] = {
    "alice": (LAB_USER, LAB_PASSWORD),  # delivered at once, by Dovecot LMTP
    "carol": ("carol@defer.test", "lab-password-2"),  # accepted, then deferred forever
    "dave": ("dave@slow.test", "lab-password-3"),  # delivered SLOW_DELIVERY_SECONDS late
}
DEFERRED_DOMAIN = "defer.test"  # Postfix's retry transport: mail stays queued, never bounces
SLOW_DOMAIN = "slow.test"  # a pipe transport that sleeps, then runs dovecot-lda
SLOW_DELIVERY_SECONDS = 5
# Postfix accepts mail for LAB_ACCOUNTS' addresses in these domains (anything
# else is refused at RCPT) and hands it to Dovecot LMTP, or as above.
MAIL_DOMAINS = ("healthy.test", DEFERRED_DOMAIN, SLOW_DOMAIN)
# sub-cleartext.test's submission server: AUTH PLAIN LOGIN on 587, no TLS at all.
SUB_CLEARTEXT_ADDRESS = "127.1.22.1"

# The one weak cipher of tls-weakcipher.test. Debian 12's OpenSSL 3.0 has no
# 3DES, RC4, DES or export suites at all (not even at @SECLEVEL=0), so this is
# TLS_RSA_WITH_AES_128_CBC_SHA: RSA key exchange (no forward secrecy), CBC,
# SHA-1 MAC. Python's default client context does not offer it.
WEAK_CIPHER = "AES128-SHA"

START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0

_DAY = timedelta(days=1)


class MailLabError(RuntimeError):
    """Postfix, Dovecot, OpenDKIM or iptables could not be found, configured, started
    or stopped, or Postfix refused a message."""


@dataclass(frozen=True)
class Listener:
    """One address:port of the lab that answers, and what it is for."""

    address: str
    port: int
    protocol: Protocol
    domain: str  # the scenario (a zone in tests/lab/zones.py)
    host: str  # the server's name: SMTP banner/EHLO name, and what DNS should call it
    about: str
    server: Server
    cert: str | None  # name of the CertSpec served (LabPKI.cert_path); None: no TLS
    # Postfix only: `-o name=value` for this service. Dovecot varies settings by
    # local address, not by listener: see DOVECOT_LOCAL.
    options: Mapping[str, str] = field(default_factory=dict)

    @property
    def endpoint(self) -> tuple[str, int]:
        return (self.address, self.port)

    @property
    def implicit_tls(self) -> bool:
        """TLS from the first byte (465, 993, 995) rather than STARTTLS/STLS."""
        return self.protocol in ("submissions", "imaps", "pop3s") and (
            self.options.get("smtpd_tls_wrappermode", "yes") == "yes"
        )


@dataclass(frozen=True)
class SilentAddress:
    """A scenario address where no lab server answers."""

    address: str
    domain: str
    # refused: nothing listens; filtered: iptables drops every TCP packet to it;
    # silent: nothing from the lab, a test runs its own never-greeting server there
    how: Silence
    ports: tuple[int, ...]  # the ports the scenario is about
    about: str


def _cert(host: str, *sans: str, **kwargs: object) -> CertSpec:
    return CertSpec(host, sans or (host,), **kwargs)  # type: ignore[arg-type]


CERTS: tuple[CertSpec, ...] = (
    _cert("mx1.healthy.test"),
    _cert("mx2.healthy.test"),
    # Also valid for ac-guess.test's names, whose clients find them only by
    # guessing (tests/lab/zones.py).
    _cert("smtp.healthy.test", "smtp.healthy.test", "smtp.ac-guess.test"),
    _cert("imap.healthy.test", "imap.healthy.test", "imap.ac-guess.test"),
    _cert("mx.smtp-name.test"),
    _cert("mx.smtp-tlsfail.test"),
    _cert("mx.smtp-authplain.test"),
    _cert("mx.sub-missing.test"),
    _cert("mx.tls-expired.test", not_before=-400 * _DAY, not_after=-2 * _DAY),
    _cert("mx.tls-future.test", not_before=5 * _DAY),
    _cert("mx.tls-expiring.test", not_after=10 * _DAY),
    _cert("mx.tls-wrongname.test", "other.example.net"),
    _cert("mx.tls-selfsigned.test", issuer="self", send_chain=False),
    _cert("mx.tls-nochain.test", send_chain=False),
    _cert("mx.tls-unknownca.test", issuer="untrusted-intermediate"),
    _cert("mx.tls-legacy.test"),
    _cert("mx.tls-weakcipher.test"),
    _cert("mx.tls-weakkey.test", key="rsa1024"),
    _cert("mx.tls-plain465.test"),
    _cert("imap.imap-plain.test", "imap.imap-plain.test", "pop.imap-plain.test"),
    _cert(
        "imap.imap-expired.test",
        "imap.imap-expired.test",
        "pop.imap-expired.test",
        not_before=-400 * _DAY,
        not_after=-2 * _DAY,
    ),
    # Never served: smtp-tlsfail pairs its certificate with this (wrong) key.
    _cert("unrelated-key.lab.test"),
    # Served by the send test's receiver, which the tests run (tests/lab/senders.py).
    _cert(RECEIVER_HOST),
)

# Debian 12's OpenSSL defaults to security level 2: no TLS < 1.2, no RSA key
# under 2048 bits. Postfix loads its certificate before it applies any cipher
# list, so level 0 has to come from an OpenSSL config file (tls_config_file).
SECLEVEL0_CONFIG = "openssl-seclevel0.cnf"
_SECLEVEL0_DOMAINS = ("tls-legacy.test", "tls-weakcipher.test", "tls-weakkey.test")

_SUBMISSION = {
    "smtpd_tls_security_level": "encrypt",
    "smtpd_sasl_auth_enable": "yes",
    "smtpd_tls_auth_only": "yes",
    "smtpd_client_restrictions": "permit_sasl_authenticated,reject",
    "smtpd_relay_restrictions": "permit_sasl_authenticated,reject",
}
# healthy.test's submission server has its mail signed (and sends it to the
# send test's receiver: tests/lab/senders.py, HEALTHY_SENDER).
MILTER = f"inet:{MILTER_ADDRESS}:{MILTER_PORT}"
_SIGNED_SUBMISSION = {**_SUBMISSION, "smtpd_milters": MILTER}


def _smtp(
    address: str,
    domain: str,
    about: str,
    *,
    host: str | None = None,
    port: int = 25,
    protocol: Protocol = "smtp",
    tls: bool = True,
    options: Mapping[str, str] | None = None,
    **more: str,
) -> Listener:
    host = host or f"mx.{domain}"
    settings = {"smtpd_tls_security_level": "may" if tls else "none", **(options or {}), **more}
    return Listener(
        address, port, protocol, domain, host, about, "postfix", host if tls else None, settings
    )


def _dovecot(
    address: str, domain: str, about: str, ports: str, *, tls: bool = True, host: str = ""
) -> list[Listener]:
    protocols: dict[str, tuple[int, Protocol]] = {
        "143": (143, "imap"),
        "993": (993, "imaps"),
        "110": (110, "pop3"),
        "995": (995, "pop3s"),
    }
    host = host or f"imap.{domain}"  # POP3 too: the zones point both SRVs at imap.<domain>
    listeners = []
    for key in ports.split():
        port, protocol = protocols[key]
        cert = host if tls else None
        listeners.append(Listener(address, port, protocol, domain, host, about, "dovecot", cert))
    return listeners


LISTENERS: tuple[Listener, ...] = (
    # healthy.test: two MX, submission on 587 and 465, IMAP and POP3 with TLS
    _smtp("127.1.1.1", "healthy.test", "MX 1: STARTTLS, no AUTH", host="mx1.healthy.test"),
    _smtp("127.1.1.2", "healthy.test", "MX 2: STARTTLS, no AUTH", host="mx2.healthy.test"),
    _smtp(
        "127.1.1.10",
        "healthy.test",
        "submission: STARTTLS required, AUTH only after it",
        host="smtp.healthy.test",
        port=587,
        protocol="submission",
        options=_SIGNED_SUBMISSION,
    ),
    _smtp(
        "127.1.1.10",
        "healthy.test",
        "submissions: implicit TLS, AUTH",
        host="smtp.healthy.test",
        port=465,
        protocol="submissions",
        options=_SIGNED_SUBMISSION,
        smtpd_tls_wrappermode="yes",
    ),
    *_dovecot(
        "127.1.1.11",
        "healthy.test",
        "STARTTLS/STLS, no plaintext login before TLS",
        "143 993 110 995",
        host="imap.healthy.test",
    ),
    # port 25 problems
    _smtp(
        "127.1.20.4",
        "smtp-reject.test",
        "greets with 554 instead of 220 (and answers 503 to everything after)",
        tls=False,  # it never gets as far as STARTTLS
        smtpd_delay_reject="no",
        smtpd_client_restrictions="reject",
    ),
    _smtp(
        "127.1.20.5",
        "smtp-name.test",
        "banner and EHLO name elsewhere.example.net",
        myhostname="elsewhere.example.net",
    ),
    _smtp("127.1.20.6", "smtp-notls.test", "no STARTTLS", tls=False),
    _smtp(
        "127.1.20.7",
        "smtp-tlsfail.test",
        "STARTTLS advertised, answered 454: the key does not match the certificate",
    ),
    _smtp(
        "127.1.20.8",
        "smtp-authplain.test",
        "AUTH PLAIN LOGIN offered (and accepted) before STARTTLS",
        smtpd_sasl_auth_enable="yes",
        smtpd_tls_auth_only="no",
    ),
    _smtp("127.1.20.9", "sub-missing.test", "good MX; nothing on 587/465"),
    # submission problems
    _smtp(
        SUB_CLEARTEXT_ADDRESS,
        "sub-cleartext.test",
        "submission without TLS: AUTH PLAIN LOGIN offered (and accepted) in cleartext",
        host="smtp.sub-cleartext.test",
        port=587,
        protocol="submission",
        tls=False,
        options={**_SUBMISSION, "smtpd_tls_security_level": "none", "smtpd_tls_auth_only": "no"},
    ),
    # TLS problems on port 25
    _smtp("127.1.21.1", "tls-expired.test", "certificate expired 2 days ago"),
    _smtp("127.1.21.2", "tls-future.test", "certificate valid only from 5 days on"),
    _smtp("127.1.21.3", "tls-expiring.test", "certificate expires in 10 days"),
    _smtp("127.1.21.4", "tls-wrongname.test", "certificate for other.example.net only"),
    _smtp("127.1.21.5", "tls-selfsigned.test", "self-signed certificate"),
    _smtp("127.1.21.6", "tls-nochain.test", "intermediate certificate not sent"),
    _smtp("127.1.21.7", "tls-unknownca.test", "issued under an untrusted root"),
    _smtp(
        "127.1.21.8",
        "tls-legacy.test",
        "accepts TLS 1.0 and 1.1 too",
        smtpd_tls_protocols=">=TLSv1",
        smtpd_tls_mandatory_protocols=">=TLSv1",
        smtpd_tls_ciphers="medium",
        tls_medium_cipherlist="DEFAULT:@SECLEVEL=0",
    ),
    _smtp(
        "127.1.21.9",
        "tls-weakcipher.test",
        f"TLS 1.2 at most, with {WEAK_CIPHER} only",
        smtpd_tls_protocols=">=TLSv1.2,<=TLSv1.2",
        smtpd_tls_mandatory_protocols=">=TLSv1.2,<=TLSv1.2",
        smtpd_tls_ciphers="high",
        tls_high_cipherlist=f"{WEAK_CIPHER}:@SECLEVEL=0",
    ),
    _smtp("127.1.21.10", "tls-weakkey.test", "1024-bit RSA key"),
    _smtp("127.1.21.11", "tls-plain465.test", "good MX (port 465 is the problem)"),
    _smtp(
        "127.1.21.11",
        "tls-plain465.test",
        "plain SMTP with STARTTLS on 465: a TLS handshake fails",
        port=465,
        protocol="submissions",
        smtpd_tls_wrappermode="no",
    ),
    # IMAP/POP3 problems
    *_dovecot(
        "127.1.23.3",
        "imap-notls.test",
        "no TLS at all; plaintext login allowed",
        "143 110",
        tls=False,
    ),
    *_dovecot(
        "127.1.23.4",
        "imap-plain.test",
        "STARTTLS/STLS offered, but LOGIN/USER allowed before it",
        "143 993 110 995",
    ),
    *_dovecot("127.1.23.9", "imap-expired.test", "certificate expired 2 days ago", "143 993"),
)

SILENT_ADDRESSES: tuple[SilentAddress, ...] = (
    SilentAddress("127.1.20.1", "smtp-refused.test", "refused", (25,), "nothing listens"),
    SilentAddress("127.1.20.2", "smtp-timeout.test", "filtered", (25,), "packets dropped"),
    SilentAddress("127.1.20.3", "smtp-stall.test", "silent", (25,), "a test's own server"),
    SilentAddress("127.1.23.1", "imap-refused.test", "refused", (143, 993), "nothing listens"),
    SilentAddress("127.1.23.2", "imap-timeout.test", "filtered", (143, 993), "packets dropped"),
    SilentAddress("127.1.23.5", "pop3-refused.test", "refused", (110, 995), "nothing listens"),
    SilentAddress("127.1.23.6", "pop3-timeout.test", "filtered", (110, 995), "packets dropped"),
)

# Dovecot settings per local address, written as `local ADDRESS { ... }`
# (with ssl_cert/ssl_key of the address's certificate). One Dovecot serves all.
DOVECOT_LOCAL: dict[str, dict[str, str]] = {
    "127.1.1.11": {},
    "127.1.23.3": {"ssl": "no", "disable_plaintext_auth": "no"},
    "127.1.23.4": {"disable_plaintext_auth": "no"},
    "127.1.23.9": {},
}

# Dovecot's SASL and LMTP sockets for Postfix, relative to the Postfix queue
# directory (smtpd and lmtp run there, so they need no path above it).
_POSTFIX_AUTH_SOCKET = "private/auth"
_POSTFIX_LMTP_SOCKET = "private/dovecot-lmtp"
# Postfix's transport for SLOW_DOMAIN (master.cf): pipe, as nobody, to dovecot-lda.
_SLOW_TRANSPORT = "slowlda"
# What Dovecot calls itself in LMTP and in the Received: header it adds
# ("by mail.lab.test with LMTP"), as Postfix's own myhostname does.
_DOVECOT_HOSTNAME = "mail.lab.test"
# Where Debian, Fedora and a source build put Dovecot's lmtp and dovecot-lda.
_DOVECOT_LIBEXEC = ("/usr/lib/dovecot", "/usr/libexec/dovecot", "/usr/local/libexec/dovecot")
# Postfix's message queues (subdirectories of queue_directory), emptied at every start.
_POSTFIX_QUEUES = (
    "maildrop",
    "incoming",
    "active",
    "deferred",
    "hold",
    "corrupt",
    "defer",
    "bounce",
    "trace",
    "flush",
    "saved",
)


def listeners_for(domain: str) -> tuple[Listener, ...]:
    return tuple(entry for entry in LISTENERS if entry.domain == domain)


def listener_at(address: str, port: int) -> Listener:
    for entry in LISTENERS:
        if entry.endpoint == (address, port):
            return entry
    raise KeyError(f"no lab listener on {address}:{port}")


def cert_spec(name: str) -> CertSpec:
    for spec in CERTS:
        if spec.name == name:
            return spec
    raise KeyError(f"no lab certificate {name!r}")


def lab_ca_file(state_dir: Path) -> Path:
    return Path(state_dir).resolve() / LAB_CA_FILE


def find_tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")
    if found is None:
        raise MailLabError(
            f"{name} not found on PATH or in /usr/sbin; run scripts/test, which installs "
            "postfix, dovecot-core, dovecot-imapd, dovecot-pop3d, dovecot-lmtpd, opendkim "
            "and iptables"
        )
    return found


def find_dovecot_program(name: str) -> str:
    """A Dovecot helper outside PATH: lmtp, dovecot-lda."""
    for directory in _DOVECOT_LIBEXEC:
        path = Path(directory) / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    raise MailLabError(
        f"Dovecot's {name} not found in {', '.join(_DOVECOT_LIBEXEC)}; run scripts/test, "
        "which installs dovecot-core and dovecot-lmtpd (lmtp)"
    )


def account_address(user: str) -> str:
    """A LAB_ACCOUNTS name ("carol") as its address; an address as itself."""
    return LAB_ACCOUNTS[user][0] if user in LAB_ACCOUNTS else user


def endpoints_in_use() -> list[tuple[str, int]]:
    """The LISTENERS endpoints something accepts connections on right now."""
    return [endpoint for endpoint in _unique_endpoints() if proc.accepts(*endpoint)]


class MailLab:
    """Postfix and Dovecot serving LISTENERS, from configs and state in state_dir."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.pki = LabPKI(self.state_dir)
        self.postfix_dir = self.state_dir / "postfix"  # config_directory: postfix -c
        self.queue_dir = self.state_dir / "postfix-queue"
        self.postfix_log = self.state_dir / "postfix.log"
        self.dovecot_dir = self.state_dir / "dovecot"
        self.dovecot_conf = self.dovecot_dir / "dovecot.conf"
        self.dovecot_run = self.dovecot_dir / "run"  # base_dir
        self.dovecot_log = self.state_dir / "dovecot.log"
        # What daemons open by absolute path after dropping root.
        self.shared_dir = _shared_dir(self.state_dir)
        self.postfix_data = self.shared_dir / "postfix-data"
        self.mail_dir = self.shared_dir / "mail"
        self.users_file = self.shared_dir / "dovecot-users"
        # dovecot-lda, run by Postfix as nobody for SLOW_DOMAIN: its own config
        # and log, and a userdb socket of the lab's Dovecot it may use.
        self.lda_conf = self.shared_dir / "dovecot-lda.conf"
        self.lda_log = self.shared_dir / "dovecot-lda.log"
        self.lda_userdb_socket = self.shared_dir / "dovecot-lda-userdb"
        self._postfix_pid = self.queue_dir / "pid" / "master.pid"
        self._dovecot_pid = self.dovecot_run / "master.pid"
        # OpenDKIM runs as root, so its keys and config need not be in shared_dir.
        self.dkim = DKIMKeys(self.state_dir / "dkim")
        self.opendkim_dir = self.state_dir / "opendkim"
        self.opendkim_conf = self.opendkim_dir / "opendkim.conf"
        self.opendkim_log = self.state_dir / "opendkim.log"
        self._opendkim_pid = self.opendkim_dir / "opendkim.pid"

    @property
    def ca_file(self) -> Path:
        """The trusted lab root alone: pass it as --ca-file (state_dir/LAB_CA_FILE)."""
        return self.state_dir / LAB_CA_FILE

    def mailbox(self, user: str = LAB_USER) -> Path:
        """The Maildir of a LAB_ACCOUNTS user, by name ("dave") or address
        (Dovecot delivers MAIL_DOMAINS mail here and serves it over IMAP/POP3)."""
        return self.mail_dir / account_address(user) / "Maildir"

    def messages(self, user: str = LAB_USER) -> list[bytes]:
        """Every message in the user's Maildir (new/ and cur/), oldest first."""
        found = []
        for sub in ("new", "cur"):
            with contextlib.suppress(FileNotFoundError):
                found += [path for path in (self.mailbox(user) / sub).iterdir() if path.is_file()]
        contents = []
        for path in sorted(found, key=lambda path: path.name):
            with contextlib.suppress(FileNotFoundError):  # moved from new/ to cur/ meanwhile
                contents.append(path.read_bytes())
        return contents

    def queue(self) -> list[dict[str, object]]:
        """Postfix's queue as `postqueue -j` lists it: one dict per message
        (queue_name, queue_id, sender, recipients: [{address, delay_reason}], ...)."""
        listed = self._postqueue("-j")
        return [json.loads(line) for line in listed.splitlines() if line.strip()]

    def _postqueue(self, option: str) -> str:
        """`postqueue -c <config> <option>`'s output. Not _run(): a warning other
        tests' sessions put in the log meanwhile is no failure of this."""
        result = subprocess.run(
            [find_tool("postqueue"), "-c", str(self.postfix_dir), option],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise MailLabError(
                f"postqueue {option} exited with {result.returncode}: {result.stderr.strip()}"
            )
        return result.stdout

    def queued(self, recipient: str | None = None) -> int:
        """How many messages sit in Postfix's queue (for recipient only, if given:
        a LAB_ACCOUNTS name or an address). Mail to carol stays there."""
        entries = self.queue()
        if recipient is None:
            return len(entries)
        wanted = account_address(recipient).lower()
        return sum(wanted in _queue_recipients(entry) for entry in entries)

    def send(self, sender: str, recipients: list[str], message: bytes) -> None:
        """Give Postfix a message from envelope sender `sender` to recipients, as
        Postfix's sendmail does (so the OpenDKIM milter sees it: non_smtpd_milters);
        return once Postfix has queued it. Delivery follows: mail from a Sender's
        domain to RECEIVER_DOMAIN goes to the send test's receiver."""
        if not recipients:
            raise ValueError("send() needs at least one recipient")
        argv = [find_tool("sendmail"), "-C", str(self.postfix_dir), "-i", "-f", sender]
        result = subprocess.run(
            [*argv, "--", *recipients], input=message, capture_output=True, check=False
        )
        if result.returncode != 0:
            raise MailLabError(
                f"Postfix's sendmail did not take the message from {sender} to "
                f"{', '.join(recipients)}: exit {result.returncode}: "
                f"{result.stderr.decode(errors='replace').strip()}\n"
                + proc.log_tail(self.postfix_log)
            )

    def flush(self) -> None:
        """Have Postfix try every queued message now (`postqueue -f`), also to
        destinations it recently found unreachable and would otherwise skip for
        a while: mail sent before a test started the receiver, for one."""
        self._postqueue("-f")

    # -- lifecycle -----------------------------------------------------------

    def start(self, build_pki: bool = True) -> None:
        """Start Dovecot, OpenDKIM and Postfix; build_pki=False when the caller
        built self.pki (with CERTS among its certificates) and self.dkim
        already, as control.Lab.up() does, whose zones publish both."""
        if re.search(r"\s", str(self.state_dir)):
            raise MailLabError(f"state dir {self.state_dir} contains white space")
        postfix, dovecot = find_tool("postfix"), find_tool("dovecot")
        opendkim = find_tool("opendkim")
        iptables = find_tool("iptables")
        find_tool("doveconf")
        find_tool("postqueue")
        find_tool("sendmail")
        find_tool("setsid")
        find_dovecot_program("lmtp")
        find_dovecot_program("dovecot-lda")
        # Leftovers: ours, and a lab noted as running from another state dir
        # (a test session that died before stopping it).
        self.stop()
        other = running_lab()
        if other is not None:
            other.stop()
        busy = endpoints_in_use()
        if busy:
            where = ", ".join(f"{a}:{p}" for a, p in busy[:3]) + (" ..." if len(busy) > 3 else "")
            raise MailLabError(
                f"something already listens on {where}: a mail lab started from elsewhere "
                "(stop it with MailLab(its state dir).stop()), or a system mail server bound "
                "to every address (0.0.0.0) on those ports?"
            )

        if proc.accepts(MILTER_ADDRESS, MILTER_PORT):
            raise MailLabError(
                f"something already listens on {MILTER_ADDRESS}:{MILTER_PORT}, where the "
                "lab's OpenDKIM should: an OpenDKIM left from a lab started elsewhere?"
            )

        self.state_dir.mkdir(parents=True, exist_ok=True)
        for log in (self.postfix_log, self.dovecot_log, self.opendkim_log):
            log.write_text("")
        # Every start begins with no mail: not even carol's, queued forever before.
        for queue in _POSTFIX_QUEUES:
            shutil.rmtree(self.queue_dir / queue, ignore_errors=True)  # `postfix check` remakes
        if build_pki:
            self.pki.build(CERTS)
            self.dkim.build()
        self._write_shared()
        self._write_dovecot_config()
        self._write_opendkim_config()
        self._write_postfix_config()
        self._validate()
        try:
            self._start_dovecot(dovecot)
            self._start_opendkim(opendkim)
            self._start_postfix(postfix)
            _install_iptables_chain(iptables)
            self._wait_for_listeners()
        except BaseException:
            with contextlib.suppress(MailLabError):
                self.stop()
            raise
        RUNNING_MARKER.write_text(f"{self.state_dir}\n")

    def stop(self) -> None:
        """Stop Postfix (and any slow delivery it left running), then OpenDKIM
        and Dovecot, and remove the iptables chain; safe to repeat.

        The chain is removed whoever made it: the lab addresses are fixed, so
        there is only ever one lab's worth of rules.
        """
        errors = []
        for what, pid_path, comm in (
            ("postfix", self._postfix_pid, "master"),
            ("opendkim", self._opendkim_pid, "opendkim"),
            ("dovecot", self._dovecot_pid, "dovecot"),
        ):
            try:
                proc.stop(proc.read_pid(pid_path, comm), what, STOP_TIMEOUT, error=MailLabError)
            except MailLabError as exc:
                errors.append(str(exc))
            else:
                pid_path.unlink(missing_ok=True)
                if what == "postfix":
                    self._stop_slow_deliveries()
        iptables = shutil.which("iptables") or shutil.which("iptables", path="/usr/sbin:/sbin")
        if iptables:
            try:
                _remove_iptables_chain(iptables)
            except MailLabError as exc:
                errors.append(str(exc))
        if errors:
            raise MailLabError("\n".join(errors))
        with contextlib.suppress(OSError):
            if RUNNING_MARKER.read_text().strip() == str(self.state_dir):
                RUNNING_MARKER.unlink()
        if not self.shared_dir.is_relative_to(self.state_dir):
            shutil.rmtree(self.shared_dir, ignore_errors=True)

    def _stop_slow_deliveries(self) -> None:
        """Kill what pipe(8) started for SLOW_DOMAIN and left behind: the command
        runs in a session of its own, so stopping Postfix does not end it, and
        it would deliver into the next lab's Maildir. Once Postfix is down, those
        are the processes running as nobody in this lab's queue directory."""
        nobody = pwd.getpwnam("nobody").pw_uid
        for pid in proc.pids_with_cwd(self.queue_dir):
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{pid}").st_uid == nobody:
                    os.kill(pid, signal.SIGKILL)

    def is_running(self) -> bool:
        return (
            proc.read_pid(self._postfix_pid, "master") is not None
            and proc.read_pid(self._opendkim_pid, "opendkim") is not None
            and proc.read_pid(self._dovecot_pid, "dovecot") is not None
        )

    # -- configuration -------------------------------------------------------

    def _write_shared(self) -> None:
        nobody = pwd.getpwnam("nobody")
        postfix_user = pwd.getpwnam("postfix")
        shutil.rmtree(self.mail_dir, ignore_errors=True)  # every start begins with no mail
        for path in (self.shared_dir, self.mail_dir, self.postfix_data):
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, 0o755)
        os.chown(self.mail_dir, nobody.pw_uid, nobody.pw_gid)
        os.chown(self.postfix_data, postfix_user.pw_uid, postfix_user.pw_gid)
        # Empty Maildirs from the start, so a test can watch them before mail comes.
        for address, _ in LAB_ACCOUNTS.values():
            for path in (
                self.mail_dir / address,
                *(self.mailbox(address) / sub for sub in ("", "new", "cur", "tmp")),
            ):
                path.mkdir(exist_ok=True)
                os.chmod(path, 0o700)
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
        # passwd-file: user:password:uid:gid:gecos:home:shell
        self.users_file.write_text(
            "".join(
                f"{address}:{_ssha512(password)}:{nobody.pw_uid}:{nobody.pw_gid}::"
                f"{self.mail_dir / address}::\n"
                for address, password in LAB_ACCOUNTS.values()
            )
        )
        os.chmod(self.users_file, 0o644)
        # Which recipients exist (Postfix refuses the rest at RCPT); the value is
        # only informative: Dovecot, not virtual(8), delivers.
        (self.shared_dir / "virtual-mailboxes").write_text(
            "".join(f"{address} {address}/Maildir/\n" for address, _ in LAB_ACCOUNTS.values())
        )
        # smtpd refuses at RCPT (450/550 and the text) any address that resolves
        # to the retry or error transport, unless the address "is known" through
        # a virtual alias (smtpd_reject_unlisted_recipient in postconf(5)): so
        # DEFERRED_DOMAIN's accounts alias themselves, and get past RCPT into the
        # queue, where retry(8) defers them at every queue run. (Other addresses
        # at DEFERRED_DOMAIN are refused at RCPT with that 450 4.4.1, not 550.)
        (self.shared_dir / "virtual-aliases").write_text(
            "".join(
                f"{address} {address}\n"
                for address, _ in LAB_ACCOUNTS.values()
                if address.endswith(f"@{DEFERRED_DOMAIN}")
            )
        )
        # Recipient domains. The null entries (" :") keep what Postfix chose
        # without this table: Dovecot LMTP for MAIL_DOMAINS, and for
        # RECEIVER_DOMAIN the transport of the envelope sender's domain (below),
        # or the error transport. Every other domain is refused.
        (self.shared_dir / "transport").write_text(
            f"{DEFERRED_DOMAIN} retry:4.4.1 {DEFERRED_DOMAIN} never takes mail in this lab\n"
            f"{SLOW_DOMAIN} {_SLOW_TRANSPORT}:\n"
            + "".join(
                f"{domain} :\n"
                for domain in (*MAIL_DOMAINS, RECEIVER_DOMAIN)
                if domain not in (DEFERRED_DOMAIN, SLOW_DOMAIN)
            )
            + "* error:the lab delivers nothing\n"
        )
        # Envelope sender domain -> its Sender's transport (master.cf), straight
        # to the receiver's address: no MX lookup.
        (self.shared_dir / "sender-transports").write_text(
            "".join(
                f"@{s.domain} {s.transport}:[{RECEIVER_ADDRESS}]:{RECEIVER_PORT}\n"
                for s in ALL_SENDERS
            )
        )
        # dovecot-lda runs as nobody: its config, log and (see dovecot.conf) userdb
        # socket are where nobody reaches. No passdb, no TLS: it only delivers.
        self.lda_conf.write_text(
            "\n".join(
                [
                    "# Written by tests/lab/mail.py at every lab start; edits are lost.",
                    f"# dovecot-lda for {SLOW_DOMAIN}, run by Postfix's {_SLOW_TRANSPORT}.",
                    f"base_dir = {self.shared_dir / 'dovecot-lda'}",
                    f"auth_socket_path = {self.lda_userdb_socket}",
                    "stats_writer_socket_path =",
                    f"log_path = {self.lda_log}",
                    "protocols = none",
                    "ssl = no",
                    f"mail_location = maildir:{self.mail_dir}/%u/Maildir",
                    "first_valid_uid = 1",
                    f"postmaster_address = postmaster@{MAIL_DOMAINS[0]}",
                    f"hostname = {_DOVECOT_HOSTNAME}",
                ]
            )
            + "\n"
        )
        os.chmod(self.lda_conf, 0o644)
        (self.shared_dir / "dovecot-lda").mkdir(exist_ok=True)
        self.lda_log.write_text("")
        for path in (self.shared_dir / "dovecot-lda", self.lda_log):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)

    def _write_dovecot_config(self) -> None:
        for path in (self.dovecot_dir, self.dovecot_run, self.dovecot_dir / "state"):
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, 0o755)
        healthy = listener_at("127.1.1.11", 993).cert
        assert healthy is not None
        lines = [
            "# Written by tests/lab/mail.py at every lab start; edits are lost.",
            f"base_dir = {self.dovecot_run}",
            f"state_dir = {self.dovecot_dir / 'state'}",
            f"log_path = {self.dovecot_log}",
            f"info_log_path = {self.dovecot_log}",
            "protocols = imap pop3 lmtp",
            # Every inet_listener below names its address, and the built-in
            # ones (imap, imaps, pop3, pop3s) get port 0, so nothing binds to
            # `listen` itself (which may not be empty).
            f"listen = {next(iter(DOVECOT_LOCAL))}",
            "shutdown_clients = yes",
            "default_internal_user = dovecot",
            "default_login_user = dovenull",
            "ssl = yes",
            f"ssl_cert = <{self.pki.cert_path(healthy)}",
            f"ssl_key = <{self.pki.key_path(healthy)}",
            "ssl_min_protocol = TLSv1.2",
            "ssl_prefer_server_ciphers = yes",
            "disable_plaintext_auth = yes",
            "auth_mechanisms = plain login",
            "auth_verbose = yes",
            f"postmaster_address = postmaster@{MAIL_DOMAINS[0]}",
            f"hostname = {_DOVECOT_HOSTNAME}",  # LMTP's greeting and Received: header
            f"mail_location = maildir:{self.mail_dir}/%u/Maildir",
            "first_valid_uid = 1",
            "passdb {",
            "  driver = passwd-file",
            f"  args = scheme=SSHA512 {self.users_file}",
            "}",
            "userdb {",
            "  driver = passwd-file",
            f"  args = {self.users_file}",
            "}",
            "service auth {",
            # Never idle-killed: a respawned auth took ~6 s to answer, and every
            # greeting that needs it (SASL in Postfix's submission) waited that long.
            "  idle_kill = 4294967295 secs",
            f"  unix_listener {self.queue_dir / _POSTFIX_AUTH_SOCKET} {{",
            "    mode = 0660",
            "    user = postfix",
            "    group = postfix",
            "  }",
            # userdb lookups for dovecot-lda as nobody (a name ending -userdb is
            # a userdb socket to Dovecot's auth).
            f"  unix_listener {self.lda_userdb_socket} {{",
            "    mode = 0600",
            "    user = nobody",
            "  }",
            "}",
            # No authentication penalty (doc.dovecot.org, "Authentication penalty
            # support"): every lab client comes from 127.0.0.1, so one test's failed
            # logins would otherwise slow every later login by up to 15 s. A failed
            # login still takes auth_failure_delay (2 s) to be refused. Dovecot's auth
            # logs "Error: net_connect_unix(anvil-auth-penalty) failed" once as it
            # starts: that is this, and harmless.
            "service anvil {",
            "  unix_listener anvil-auth-penalty {",
            "    mode = 0",
            "  }",
            "}",
            # Postfix's virtual_transport: lmtp(8), as user postfix, unchrooted.
            "service lmtp {",
            f"  unix_listener {self.queue_dir / _POSTFIX_LMTP_SOCKET} {{",
            "    mode = 0600",
            "    user = postfix",
            "    group = postfix",
            "  }",
            "}",
        ]
        for service, kinds in (
            ("imap-login", ("imap", "imaps")),
            ("pop3-login", ("pop3", "pop3s")),
        ):
            lines.append(f"service {service} {{")
            for builtin in kinds:
                lines += [f"  inet_listener {builtin} {{", "    port = 0", "  }"]
            for entry in LISTENERS:
                if entry.server == "dovecot" and entry.protocol in kinds:
                    lines += [
                        f"  inet_listener {entry.protocol}_{entry.address.replace('.', '_')} {{",
                        f"    address = {entry.address}",
                        f"    port = {entry.port}",
                        f"    ssl = {'yes' if entry.implicit_tls else 'no'}",
                        "  }",
                    ]
            lines.append("}")
        for address, settings in DOVECOT_LOCAL.items():
            certs = {x.cert for x in LISTENERS if x.address == address and x.server == "dovecot"}
            lines.append(f"local {address} {{")
            for cert in sorted(c for c in certs if c is not None):
                lines.append(f"  ssl_cert = <{self.pki.cert_path(cert)}")
                lines.append(f"  ssl_key = <{self.pki.key_path(cert)}")
            lines += [f"  {key} = {value}" for key, value in settings.items()]
            lines.append("}")
        self.dovecot_conf.write_text("\n".join(lines) + "\n")

    def _write_postfix_config(self) -> None:
        for path in (self.postfix_dir, self.queue_dir):
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, 0o755)
        (self.postfix_dir / SECLEVEL0_CONFIG).write_text(
            "# OpenSSL config for the lab's legacy/weak Postfix listeners only.\n"
            "openssl_conf = lab_init\n\n[lab_init]\nssl_conf = lab_ssl\n\n"
            "[lab_ssl]\nsystem_default = lab_seclevel0\n\n"
            "[lab_seclevel0]\nCipherString = DEFAULT:@SECLEVEL=0\nMinProtocol = TLSv1\n"
        )
        nobody = pwd.getpwnam("nobody")
        main = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.postfix_data),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            # Listeners name their address in master.cf; nothing binds more.
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "myhostname": "mail.lab.test",
            "mydomain": "lab.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "mynetworks": "",
            "relay_domains": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "smtpd_relay_restrictions": "permit_sasl_authenticated, reject_unauth_destination",
            # Mail for LAB_ACCOUNTS is kept; anything else is refused at RCPT.
            "virtual_mailbox_domains": " ".join(MAIL_DOMAINS),
            "virtual_mailbox_maps": f"texthash:{self.shared_dir / 'virtual-mailboxes'}",
            "virtual_transport": f"lmtp:unix:{_POSTFIX_LMTP_SOCKET}",
            "virtual_alias_maps": f"texthash:{self.shared_dir / 'virtual-aliases'}",
            # DEFERRED_DOMAIN to retry:, SLOW_DOMAIN to the pipe below.
            "transport_maps": f"texthash:{self.shared_dir / 'transport'}",
            # Mail to RECEIVER_DOMAIN: the transport of the sender's domain.
            "sender_dependent_default_transport_maps": (
                f"texthash:{self.shared_dir / 'sender-transports'}"
            ),
            # DKIM signing of what sendmail injects (MailLab.send); healthy.test's
            # submission listeners add it as smtpd_milters. Without OpenDKIM,
            # mail goes unsigned: a test then says so.
            "non_smtpd_milters": MILTER,
            "milter_default_action": "accept",
            f"{_SLOW_TRANSPORT}_destination_recipient_limit": "1",  # one ${recipient}
            # Deferred mail stays (and is retried) for days: never a bounce in a
            # test session. No delay warnings either (delay_warning_time = 0).
            "maximal_queue_lifetime": "10d",
            "bounce_queue_lifetime": "10d",
            "delay_warning_time": "0h",
            # A delivery that failed once is retried soon, not in 5 minutes.
            "queue_run_delay": "10s",
            "minimal_backoff_time": "10s",
            "maximal_backoff_time": "60s",
            "default_transport": "error:the lab delivers nothing",
            "relay_transport": "error:the lab delivers nothing",
            "smtpd_banner": "$myhostname ESMTP",
            "smtpd_peername_lookup": "no",
            "biff": "no",
            "maillog_file": str(self.postfix_log),
            "maillog_file_prefixes": str(self.state_dir),
            "smtpd_tls_security_level": "none",
            "smtpd_tls_protocols": ">=TLSv1.2",
            "smtpd_tls_mandatory_protocols": ">=TLSv1.2",
            "smtpd_tls_loglevel": "1",
            "smtpd_tls_session_cache_database": "",
            "smtpd_sasl_type": "dovecot",
            "smtpd_sasl_path": _POSTFIX_AUTH_SOCKET,
            "smtpd_sasl_auth_enable": "no",
            "smtp_tls_security_level": "none",  # each Sender's transport sets its own
            "smtp_tls_loglevel": "1",
            "smtp_tls_session_cache_database": "",
            "tls_random_source": "dev:/dev/urandom",
        }
        (self.postfix_dir / "main.cf").write_text(
            "# Written by tests/lab/mail.py at every lab start; edits are lost.\n"
            + "".join(f"{key} = {value}\n" for key, value in main.items())
        )
        master = [
            "# Written by tests/lab/mail.py at every lab start; edits are lost.",
            "# service type private unpriv chroot wakeup maxproc command",
            *_POSTFIX_INTERNAL_SERVICES,
        ]
        # SLOW_DOMAIN: wait, then let dovecot-lda put the message in the Maildir.
        # pipe(8) runs it as nobody (the mailboxes' owner); $$ is a literal $.
        lda = find_dovecot_program("dovecot-lda")
        master += [
            f"{_SLOW_TRANSPORT} unix - n n - - pipe",
            f"  flags=DRXhu user={nobody.pw_name} argv=/bin/sh -c "
            f"{{ sleep {SLOW_DELIVERY_SECONDS}; "
            f'exec {lda} -c {self.lda_conf} -d "$$0" -f "$$1" }} ${{recipient}} ${{sender}}',
        ]
        for entry in LISTENERS:
            if entry.server != "postfix":
                continue
            options = {
                "syslog_name": f"postfix/{entry.domain}/{entry.port}",
                "myhostname": entry.host,
                **self._tls_options(entry),
                **entry.options,
            }
            master.append(f"{entry.address}:{entry.port} inet n - n - - smtpd")
            master += [f"  -o {key}={value}" for key, value in options.items()]
        # The send test's sending servers: one smtp(8) client per Sender.
        for sender in ALL_SENDERS:
            options = {
                "syslog_name": f"postfix/{sender.domain}/out",
                "smtp_bind_address": sender.address,
                "smtp_helo_name": sender.helo,
                "smtp_tls_security_level": "may" if sender.tls else "none",
            }
            master.append(f"{sender.transport} unix - - n - - smtp")
            master += [f"  -o {key}={value}" for key, value in options.items()]
        (self.postfix_dir / "master.cf").write_text("\n".join(master) + "\n")
        for name in ("main.cf", "master.cf", SECLEVEL0_CONFIG):
            os.chmod(self.postfix_dir / name, 0o644)

    def _tls_options(self, entry: Listener) -> dict[str, str]:
        if entry.cert is None:
            return {}
        key = "unrelated-key.lab.test" if entry.domain == "smtp-tlsfail.test" else entry.cert
        options = {
            "smtpd_tls_cert_file": str(self.pki.cert_path(entry.cert)),
            "smtpd_tls_key_file": str(self.pki.key_path(key)),
        }
        if entry.domain in _SECLEVEL0_DOMAINS:
            options["tls_config_file"] = str(self.postfix_dir / SECLEVEL0_CONFIG)
        return options

    def _write_opendkim_config(self) -> None:
        """OpenDKIM signs mail whose From: is in SIGNING_DOMAINS with that
        domain's key at DKIM_SELECTOR, when it comes from a loopback client
        (InternalHosts; Postfix reports sendmail's mail as from 127.0.0.1)."""
        self.opendkim_dir.mkdir(parents=True, exist_ok=True)
        key_table = self.opendkim_dir / "key-table"
        signing_table = self.opendkim_dir / "signing-table"
        internal_hosts = self.opendkim_dir / "internal-hosts"
        key_table.write_text(
            "".join(
                f"{domain} {domain}:{DKIM_SELECTOR}:{self.dkim.key_path(domain)}\n"
                for domain in SIGNING_DOMAINS
            )
        )
        signing_table.write_text("".join(f"*@{domain} {domain}\n" for domain in SIGNING_DOMAINS))
        internal_hosts.write_text("127.0.0.0/8\n")
        settings = {
            # No syslog here: what it says before and while starting goes to
            # its stderr, into opendkim.log (see _start_opendkim).
            "Syslog": "no",
            "Background": "no",
            "AutoRestart": "no",
            "PidFile": self._opendkim_pid,
            "Socket": f"inet:{MILTER_PORT}@{MILTER_ADDRESS}",
            "Mode": "s",
            "Canonicalization": "relaxed/relaxed",
            "OversignHeaders": "From",
            "KeyTable": key_table,
            # Its "safe key" check refuses a key below a world-writable directory
            # such as /tmp, where pytest's state dirs are; a refused key makes it
            # answer every message with a 451. These keys are throwaway ones.
            "RequireSafeKeys": "no",
            "SigningTable": f"refile:{signing_table}",
            "InternalHosts": internal_hosts,
        }
        self.opendkim_conf.write_text(
            "# Written by tests/lab/mail.py at every lab start; edits are lost.\n"
            + "".join(f"{key} {value}\n" for key, value in settings.items())
        )

    def _validate(self) -> None:
        self._run(
            [find_tool("postfix"), "-c", str(self.postfix_dir), "check"],
            "the lab's Postfix config is invalid",
        )
        self._run(
            [find_tool("opendkim"), "-n", "-x", str(self.opendkim_conf)],
            "the lab's OpenDKIM config is invalid",
        )
        for conf in (self.dovecot_conf, self.lda_conf):
            # doveconf exits non-zero on a config error; an Error: line with a
            # zero exit is about the machine (a minimal root without /etc/mtab).
            self._run(
                [find_tool("doveconf"), "-c", str(conf), "-n"],
                f"the lab's Dovecot config {conf.name} is invalid",
                stdout=False,
                complaints_fatal=False,
            )

    # -- daemons -------------------------------------------------------------

    def _start_dovecot(self, dovecot: str) -> None:
        sockets = (
            self.queue_dir / _POSTFIX_AUTH_SOCKET,
            self.queue_dir / _POSTFIX_LMTP_SOCKET,
            self.lda_userdb_socket,
        )
        for socket_path in sockets:
            socket_path.unlink(missing_ok=True)
        self._run([dovecot, "-c", str(self.dovecot_conf)], "dovecot did not start")
        # Postfix's SASL listeners need Dovecot's auth socket from the start,
        # and its queue manager the LMTP socket from the first message on.
        deadline = time.monotonic() + START_TIMEOUT
        for socket_path in sockets:
            while not socket_path.is_socket():
                if (
                    time.monotonic() > deadline
                    or proc.read_pid(self._dovecot_pid, "dovecot") is None
                ):
                    raise MailLabError(
                        f"dovecot did not create its socket {socket_path}\n"
                        + proc.log_tail(self.dovecot_log)
                    )
                time.sleep(0.02)

    def _start_opendkim(self, opendkim: str) -> None:
        """Run OpenDKIM in the foreground (Background no) in a session of its own,
        detached by setsid --fork like the other daemons, so its stderr stays
        opendkim.log; it writes its pid file itself."""
        self._opendkim_pid.unlink(missing_ok=True)
        with self.opendkim_log.open("ab") as log:
            subprocess.run(
                [find_tool("setsid"), "--fork", opendkim, "-x", str(self.opendkim_conf)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                check=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not (
            proc.read_pid(self._opendkim_pid, "opendkim") is not None
            and proc.accepts(MILTER_ADDRESS, MILTER_PORT)
        ):
            exited = self._opendkim_pid.exists() and proc.read_pid(self._opendkim_pid) is None
            if exited or time.monotonic() > deadline:
                raise MailLabError(
                    f"opendkim did not start listening on {MILTER_ADDRESS}:{MILTER_PORT}\n"
                    + proc.log_tail(self.opendkim_log)
                )
            time.sleep(0.05)

    def _start_postfix(self, postfix: str) -> None:
        # `postfix start` returns once master has bound every listener (master -w).
        self._run([postfix, "-c", str(self.postfix_dir), "start"], "postfix did not start")
        if proc.read_pid(self._postfix_pid, "master") is None:
            raise MailLabError("postfix did not start\n" + proc.log_tail(self.postfix_log))

    def _run(
        self, argv: list[str], what: str, stdout: bool = True, complaints_fatal: bool = True
    ) -> None:
        """Run a command; a non-zero exit or, if `complaints_fatal`, a warning
        or error line (in its output or in the Postfix log meanwhile:
        postfix-script logs there) is an error.

        Output goes through a file, not a pipe: a daemon that forks off keeps
        the inherited descriptors, and reading a pipe would wait for it to exit.
        """
        log_offset = _size(self.postfix_log)
        with (self.state_dir / "command.out").open("w+") as output_file:
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=output_file if stdout else subprocess.DEVNULL,
                stderr=output_file,
                check=False,
            )
            output_file.seek(0)
            output = output_file.read().strip()
        logged = _read_from(self.postfix_log, log_offset)
        problems = [
            line
            for line in (output + "\n" + logged).splitlines()
            if re.search(r"\b(warning|fatal|panic|error):", line, re.IGNORECASE)
        ]
        if result.returncode != 0 or (problems and complaints_fatal):
            details = "\n".join(problems) or output
            raise MailLabError(
                f"{what}: `{' '.join(argv)}` exited with {result.returncode}\n{details}\n"
                f"{proc.log_tail(self.dovecot_log, 5)}"
            )

    def _wait_for_listeners(self) -> None:
        pending = set(_unique_endpoints())
        deadline = time.monotonic() + START_TIMEOUT
        while pending and time.monotonic() < deadline:
            pending = {endpoint for endpoint in pending if not proc.accepts(*endpoint)}
            if pending:
                time.sleep(0.05)
        if pending:
            where = ", ".join(f"{a}:{p}" for a, p in sorted(pending))
            raise MailLabError(
                f"not answering after {START_TIMEOUT:.0f}s: {where}\n"
                f"{proc.log_tail(self.postfix_log)}\n{proc.log_tail(self.dovecot_log)}"
            )


# The non-listening services a Postfix needs, all outside a chroot (column 5: n).
_POSTFIX_INTERNAL_SERVICES = (
    "pickup    unix  n - n 60 1 pickup",
    "cleanup   unix  n - n - 0 cleanup",
    "qmgr      unix  n - n 300 1 qmgr",
    "tlsmgr    unix  - - n 1000? 1 tlsmgr",
    "rewrite   unix  - - n - - trivial-rewrite",
    "bounce    unix  - - n - 0 bounce",
    "defer     unix  - - n - 0 bounce",
    "trace     unix  - - n - 0 bounce",
    "verify    unix  - - n - 1 verify",
    "flush     unix  n - n 1000? 0 flush",
    "proxymap  unix  - - n - - proxymap",
    "proxywrite unix - - n - 1 proxymap",
    "smtp      unix  - - n - - smtp",
    "relay     unix  - - n - - smtp",
    "showq     unix  n - n - - showq",
    "error     unix  - - n - - error",
    "retry     unix  - - n - - error",
    "discard   unix  - - n - - discard",
    "local     unix  - n n - - local",
    "virtual   unix  - n n - - virtual",
    "lmtp      unix  - - n - - lmtp",
    "anvil     unix  - - n - 1 anvil",
    "scache    unix  - - n - 1 scache",
    "postlog   unix-dgram n - n - 1 postlogd",
)


def _queue_recipients(entry: Mapping[str, object]) -> set[str]:
    """The recipient addresses (lower case) of one `postqueue -j` entry."""
    recipients = entry.get("recipients")
    if not isinstance(recipients, list):
        return set()
    return {str(r.get("address", "")).lower() for r in recipients if isinstance(r, dict)}


def _unique_endpoints() -> list[tuple[str, int]]:
    return sorted({entry.endpoint for entry in LISTENERS})


def _shared_dir(state_dir: Path) -> Path:
    """state_dir/shared if other users can reach it, else a directory in /tmp
    named after state_dir (pytest's tmp dirs, for one, are 0700)."""
    for directory in (state_dir, *state_dir.parents):
        try:
            mode = directory.stat().st_mode
        except FileNotFoundError:
            continue  # made later, by us, 0755
        if not mode & stat.S_IXOTH:
            digest = hashlib.sha256(str(state_dir).encode()).hexdigest()[:12]
            return Path(tempfile.gettempdir()).resolve() / f"mailcheck-lab-{digest}"
    return state_dir / "shared"


def _ssha512(password: str) -> str:
    """Dovecot's {SSHA512}: base64(sha512(password + salt) + salt)."""
    salt = os.urandom(8)
    digest = hashlib.sha512(password.encode() + salt).digest()
    return "{SSHA512}" + base64.b64encode(digest + salt).decode()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as file:
            file.seek(offset)
            return file.read().decode(errors="replace")
    except OSError:
        return ""


# -- iptables ----------------------------------------------------------------------

# Loopback packets pass OUTPUT, then INPUT; the chain is jumped to from both
# for the lab network only, so it can never touch other traffic.
_JUMPS = (("OUTPUT", "-d", LAB_NETWORK), ("INPUT", "-d", LAB_NETWORK))


def _iptables(iptables: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [iptables, "-w", "5", *args], capture_output=True, text=True, check=False
    )
    if check and result.returncode != 0:
        raise MailLabError(
            "iptables is unusable here, so the lab cannot make its 'timeout' addresses "
            f"drop packets: `iptables {' '.join(args)}` exited with {result.returncode}: "
            f"{(result.stderr or result.stdout).strip()} (the lab needs root and a kernel "
            "with netfilter; scripts/test installs the iptables package)"
        )
    return result


def _install_iptables_chain(iptables: str) -> None:
    _remove_iptables_chain(iptables)
    _iptables(iptables, "-N", IPTABLES_CHAIN)
    for silent in SILENT_ADDRESSES:
        if silent.how == "filtered":
            drop = ("-d", f"{silent.address}/32", "-p", "tcp", "-j", "DROP")
            _iptables(iptables, "-A", IPTABLES_CHAIN, *drop)
    for chain, *match in _JUMPS:
        _iptables(iptables, "-I", chain, *match, "-j", IPTABLES_CHAIN)


def _remove_iptables_chain(iptables: str) -> None:
    """Remove every jump to the chain, then the chain; fine if there is none."""
    if _iptables(iptables, "-S", IPTABLES_CHAIN, check=False).returncode != 0:
        return
    for chain, *match in _JUMPS:
        jump = (chain, *match, "-j", IPTABLES_CHAIN)
        while _iptables(iptables, "-C", *jump, check=False).returncode == 0:
            _iptables(iptables, "-D", *jump)
    _iptables(iptables, "-F", IPTABLES_CHAIN)
    _iptables(iptables, "-X", IPTABLES_CHAIN)


def iptables_rules() -> list[str]:
    """The lab chain's rules as `iptables -S` prints them (empty if there is none)."""
    listed = _iptables(find_tool("iptables"), "-S", IPTABLES_CHAIN, check=False)
    return listed.stdout.splitlines() if listed.returncode == 0 else []


# -- finding the running lab ---------------------------------------------------------

# The lab's addresses are fixed, so at most one runs on a machine; whoever
# started it (python -m tests.lab up, a pytest fixture) notes its state dir here.
RUNNING_MARKER = Path(tempfile.gettempdir()) / "mailcheck-mail-lab.state-dir"


def running_lab() -> MailLab | None:
    """The MailLab that is running now, if it was started by MailLab.start()."""
    try:
        state_dir = Path(RUNNING_MARKER.read_text().strip())
    except OSError:
        return None
    lab = MailLab(state_dir)
    return lab if lab.is_running() else None


def default_state_dir() -> Path:
    """Where `python -m tests.lab up` keeps the mail lab: $MAILCHECK_LAB_DIR/mail,
    else .lab/mail in the repository."""
    root = os.environ.get("MAILCHECK_LAB_DIR")
    base = Path(root) if root else Path(__file__).resolve().parents[2] / ".lab"
    return base / "mail"


@contextlib.contextmanager
def running_mail_lab(state_dir: Path) -> Iterator[MailLab]:
    """The mail lab, for a test session: the one already running (left running
    afterwards), else one started in state_dir (stopped afterwards).

    Its ca_file is what clients must trust (--ca-file).
    """
    if endpoints_in_use():
        lab = running_lab()
        if lab is None:
            raise MailLabError(
                "something listens on the mail lab's addresses, but no lab is noted in "
                f"{RUNNING_MARKER}: stop it (python -m tests.lab down) and try again"
            )
        yield lab
        return
    lab = MailLab(state_dir)
    lab.start()
    try:
        yield lab
    finally:
        lab.stop()
