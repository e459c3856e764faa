"""Start and stop the whole lab: PKI, signed DNS, mail, web, Redis.

The order matters: the PKI and the DKIM keys come first, because the DNS
zones carry TLSA records of the lab's certificates and the public halves of
the keys the lab's OpenDKIM signs with (tests/lab/dkim.py); the zones are
signed (tests/lab/signing.py) with keys made at every start, and the trust
anchor of the signed test. zone is written to <root>/dns/trust-anchors for
clients (`--trust-anchor`). Two more NSDs give the nameserver-consistency
scenarios (tests/lab/zones.py) servers that disagree with the main one: the
stale secondary (<root>/dns-stale) and the parent-only server (<root>/dns-parent),
which serves the very same signed test. zone, so it refers every child name.

ROOT_MARKER names the root of the lab that runs, so tests and benchmarks
find its CA file and trust anchors wherever it was started from.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from .mail import CERTS, LISTENERS, MailLab, MailLabError
from .nsd import NSDLab, NSDLabError
from .pki import LabPKI
from .redis import RedisLab, RedisLabError
from .senders import (
    ALL_SENDERS,
    MILTER_ADDRESS,
    MILTER_PORT,
    RECEIVER_ADDRESS,
    RECEIVER_PORT,
    SIGNING_DOMAINS,
)
from .web import NginxLab, WebLabError
from .zones import (
    PARENT_NS_ADDRESS,
    STALE_NS_ADDRESS,
    all_zones,
    dnssec_plan,
    stale_zone,
    web_sites,
)

ROOT_MARKER = Path(tempfile.gettempdir()) / "mailcheck-lab.root"
LabErrors = (NSDLabError, MailLabError, RedisLabError, WebLabError)


@dataclass(frozen=True)
class Lab:
    root: Path

    @property
    def dns(self) -> NSDLab:
        return NSDLab(self.root / "dns")

    @property
    def dns_stale(self) -> NSDLab:
        return NSDLab(self.root / "dns-stale", address=STALE_NS_ADDRESS)

    @property
    def dns_parent(self) -> NSDLab:
        return NSDLab(self.root / "dns-parent", address=PARENT_NS_ADDRESS)

    @property
    def mail(self) -> MailLab:
        return MailLab(self.root / "mail")

    @property
    def web(self) -> NginxLab:
        return NginxLab(self.root / "web")

    @property
    def redis(self) -> RedisLab:
        return RedisLab(self.root / "redis")

    @property
    def ca_file(self) -> Path:
        return self.mail.ca_file

    @property
    def trust_anchors(self) -> Path:
        return self.root / "dns" / "trust-anchors"

    def up(self, *, redis: bool = True) -> list[str]:
        """Start everything (stopping leftovers first); lines saying what runs where."""
        from .signing import sign_lab  # late: only starting needs the signer

        said = []
        pki = self.mail.pki
        web_certs = {site.cert.name: site.cert for site in web_sites()}  # sites may share one
        pki.build([*CERTS, *web_certs.values()])
        dkim = self.mail.dkim
        dkim.build()
        zones = all_zones(lambda name, params: tlsa_data(pki, name, params), dkim.record)
        unsigned, broken = dnssec_plan()
        signed = sign_lab(zones, unsigned=unsigned, broken=broken)
        self.dns.start(signed.zones)
        self.trust_anchors.write_text("\n".join(signed.anchors) + "\n")
        said.append(
            f"lab dns: nsd on {self.dns.address}:{self.dns.port}, {len(zones)} zones "
            f"({len(zones) - len(unsigned)} signed; trust anchor in {self.trust_anchors})"
        )
        (parent,) = [zone for zone in signed.zones if zone.origin == "test"]
        self.dns_parent.start([parent])
        self.dns_stale.start([stale_zone()])
        said.append(
            f"lab dns-parent: nsd on {self.dns_parent.address}:{self.dns_parent.port}, only test."
        )
        said.append(
            f"lab dns-stale: nsd on {self.dns_stale.address}:{self.dns_stale.port}, "
            "only an older copy of dns-stale.test"
        )
        self.mail.start(build_pki=False)
        said.append(
            f"lab mail: postfix+dovecot, {len(LISTENERS)} listeners, CA {self.ca_file}; "
            f"opendkim on {MILTER_ADDRESS}:{MILTER_PORT} for {len(SIGNING_DOMAINS)} domains, "
            f"{len(ALL_SENDERS)} senders to {RECEIVER_ADDRESS}:{RECEIVER_PORT}"
        )
        sites = web_sites()
        self.web.start(sites, pki)
        said.append(f"lab web: nginx on {', '.join(s.address for s in sites)}")
        if redis:
            self.redis.start()
            said.append(f"lab redis: redis-server on {self.redis.url}")
        ROOT_MARKER.write_text(f"{self.root}\n")
        return said

    def down(self) -> list[str]:
        """Stop each part, even if an earlier one fails; the first error is raised."""
        errors: list[Exception] = []
        said = []
        for name, server in (
            ("redis", self.redis),
            ("web", self.web),
            ("mail", self.mail),
            ("dns-stale", self.dns_stale),
            ("dns-parent", self.dns_parent),
            ("dns", self.dns),
        ):
            was_running = server.is_running()
            try:
                server.stop()
            except LabErrors as exc:
                errors.append(exc)
                continue
            said.append(f"lab {name}: {'stopped' if was_running else 'was not running'}")
        if running_root() == self.root:
            ROOT_MARKER.unlink(missing_ok=True)
        if errors:
            raise errors[0]
        return said

    def status(self) -> dict[str, bool]:
        return {
            "dns": self.dns.is_running(),
            "dns-stale": self.dns_stale.is_running(),
            "dns-parent": self.dns_parent.is_running(),
            "mail": self.mail.is_running(),
            "web": self.web.is_running(),
            "redis": self.redis.is_running(),
        }


def tlsa_data(pki: LabPKI, name: str, params: str = "3 1 1") -> str:
    """TLSA data pinning a lab certificate: "3 1 1" (DANE-EE) pins the leaf's
    key; "2 x y" (DANE-TA) pins the CA certificate served after it."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from checks.rules.dane import record_for

    usage, selector, mtype = (int(p) for p in params.split())
    chain = x509.load_pem_x509_certificates(pki.cert_path(name).read_bytes())
    cert = chain[-1] if usage == 2 else chain[0]
    return record_for(cert.public_bytes(Encoding.DER), usage, selector, mtype)


def running_root() -> Path | None:
    try:
        return Path(ROOT_MARKER.read_text().strip())
    except OSError:
        return None
