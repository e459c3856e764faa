"""DNSSEC-sign the lab's zones, so the validator meets real signed zones in NSD.

Each signed zone gets fresh keys on every call, made in memory and never
written anywhere: a KSK (flags 257; signs the DNSKEY rrset; its DS goes to the
parent) and a ZSK (flags 256; signs everything else), both ECDSA P-256
(algorithm 13). The KSK/ZSK split is what most operators run, so a validator
is tested on a DNSKEY rrset proven by one key and data signed by another.

The SOA signed is the SOA served: each zone's `Zone.render()` text is parsed,
signed with dnspython's `dns.dnssec.sign_zone` (NSEC, not NSEC3), and emitted
again as zone-file lines. sign_zone leaves delegations alone, as RFC 4035
§2.2 wants: the NS rrset at a cut and any glue below it get no RRSIG and no
NSEC of their own; the DS at the cut is signed, and the cut gets an NSEC.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import dns.dnssec
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.zone
from cryptography.hazmat.primitives.asymmetric import ec
from dns.dnssectypes import Algorithm
from dns.rdtypes.ANY.DNSKEY import DNSKEY

from .nsd import DEFAULT_TTL, Zone

DAY = 86400
KSK_FLAGS = 257  # ZONE | SEP
ZSK_FLAGS = 256  # ZONE

# How `broken` can spoil a zone; every spoiled zone still loads in NSD.
BREAKAGES = {
    "expired": "every RRSIG expired a week ago",
    "not-yet-valid": "every RRSIG becomes valid in a week",
    "badsig": "the RRSIGs over the MX rrsets are altered, so they do not verify",
    "ds-mismatch": "the parent's DS points to a KSK the zone does not publish",
    "island": "signed, but the parent gets no DS for it (an island of security)",
}

Key = tuple[ec.EllipticCurvePrivateKey, DNSKEY]


@dataclass(frozen=True)
class SignedLab:
    zones: list[Zone]  # same origins and order; signed ones carry DNSKEY, RRSIG, NSEC lines
    anchors: tuple[str, ...]  # "test. IN DS ..." for the top zone; () when it is unsigned


def sign_lab(
    zones: Sequence[Zone],
    *,
    top: str = "test",
    unsigned: Iterable[str] = (),
    broken: Mapping[str, str] = {},
    now: float | None = None,
) -> SignedLab:
    """Sign `top` and the zones below it, children first so each signed
    child's DS is in its parent before the parent is signed. Zones outside
    `top` (the reverse zone) and those in `unsigned` are left as they are.
    `broken` maps an origin to one of BREAKAGES."""
    now = time.time() if now is None else now
    top = _origin(top)
    skip = {_origin(u) for u in unsigned}
    spoil = {_origin(origin): kind for origin, kind in broken.items()}
    origins = [zone.origin for zone in zones]
    for origin, asked in spoil.items():
        if asked not in BREAKAGES:
            raise ValueError(f"unknown breakage {asked!r} for {origin}; known: {sorted(BREAKAGES)}")
        if origin not in origins or origin in skip or not _under(origin, top):
            raise ValueError(f"cannot break {origin}: it is not a zone this call signs")

    parsed = {z.origin: dns.zone.from_text(z.render(), origin=f"{z.origin}.") for z in zones}
    to_sign = [o for o in origins if _under(o, top) and o not in skip]
    anchors: tuple[str, ...] = ()
    # Deepest first: a parent is signed only after its children's DS are in it.
    for origin in sorted(to_sign, key=lambda o: -len(dns.name.from_text(o))):
        signing, kind = parsed[origin], spoil.get(origin)
        ksk, zsk = _make_key(KSK_FLAGS), _make_key(ZSK_FLAGS)
        inception, expiration = now - 3600, now + 30 * DAY
        if kind == "expired":
            inception, expiration = now - 21 * DAY, now - 7 * DAY
        elif kind == "not-yet-valid":
            inception, expiration = now + 7 * DAY, now + 37 * DAY
        dns.dnssec.sign_zone(
            signing,
            keys=[ksk, zsk],
            dnskey_ttl=DEFAULT_TTL,
            inception=inception,
            expiration=expiration,
        )
        if kind == "badsig":
            _spoil_mx_signatures(signing)
        if kind == "island":
            continue
        delegated = _make_key(KSK_FLAGS)[1] if kind == "ds-mismatch" else ksk[1]
        ds = dns.dnssec.make_ds(f"{origin}.", delegated, "SHA256")
        if origin == top:
            anchors = (f"{origin}. IN DS {ds.to_text()}",)
            continue
        parent = _parent_zone(origin, origins)
        if parent is not None:
            _delegate(parsed[parent], parsed[origin], ds)

    out = []
    for zone in zones:
        if zone.origin in to_sign:
            text = parsed[zone.origin].to_text(sorted=True, relativize=True, nl="\n")
            zone = Zone(zone.origin, tuple(line for line in text.splitlines() if line))
        out.append(zone)
    return SignedLab(out, anchors)


def _make_key(flags: int) -> Key:
    private = ec.generate_private_key(ec.SECP256R1())
    dnskey = dns.dnssec.make_dnskey(private.public_key(), Algorithm.ECDSAP256SHA256, flags=flags)
    return private, dnskey


def _delegate(parent: dns.zone.Zone, child: dns.zone.Zone, ds: dns.rdata.Rdata) -> None:
    """Put the child's DS at the cut in the parent, with an NS delegation if missing."""
    assert child.origin is not None
    with parent.writer() as txn:
        if txn.get(child.origin, dns.rdatatype.NS) is None:
            ns = child.get_rdataset(child.origin, dns.rdatatype.NS)
            assert ns is not None  # Zone.render() always has one
            txn.add(child.origin, ns)
        txn.add(child.origin, DEFAULT_TTL, ds)


def _spoil_mx_signatures(zone: dns.zone.Zone) -> None:
    """Flip a bit in each RRSIG over an MX rrset: well-formed, but it cannot verify."""
    spoiled = 0
    for node in zone.nodes.values():
        sigs = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.RRSIG, dns.rdatatype.MX)
        if sigs is None:
            continue
        bad = dns.rdataset.Rdataset(dns.rdataclass.IN, dns.rdatatype.RRSIG, dns.rdatatype.MX)
        bad.update_ttl(sigs.ttl)
        for sig in sigs:
            altered = bytearray(sig.signature)
            altered[len(altered) // 2] ^= 0x01
            bad.add(sig.replace(signature=bytes(altered)))
        node.replace_rdataset(bad)
        spoiled += 1
    if not spoiled:
        raise ValueError(f"badsig: {zone.origin} has no MX rrset whose RRSIG could be spoiled")


def _parent_zone(origin: str, origins: Iterable[str]) -> str | None:
    """The nearest other zone above `origin`, if the lab has one."""
    above = [o for o in origins if o != origin and _under(origin, o)]
    return max(above, key=len, default=None)


def _under(name: str, zone: str) -> bool:
    return name == zone or name.endswith(f".{zone}")


def _origin(name: str) -> str:
    return name.rstrip(".").lower()
