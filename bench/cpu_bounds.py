"""CPU-heavy work under hostile input: CPU seconds, and how long the event loop stalls.

    .venv/bin/python -m bench.cpu_bounds [--keys 12] [--signatures 40] [--hosts 16]
                                         [--mb 10] [--copies 20] [--blank-mb 4]

Needs no lab: the hostile zone and the DKIM key are served by tiny DNS servers
on loopback (127.1.0.0/16). Each attack is measured twice:

- unbounded: the work as mailcheck did it up to commit 0ae9640, in the event
  loop: every RRSIG tried with every DNSKEY of its tag (dnspython tries them
  all), every DKIM-Signature verified by dkimpy;
- bounded: the same input through today's code (checks.rules.dnssec, the send
  test's judgement), with its caps, worker threads and child process.

1. KeyTrap (CVE-2023-50387): an MX rrset with `signatures` RRSIGs naming a key
   tag that `keys` DNSKEYs share (2,040-bit exponents: about 2 ms a check);
   then the same spread over `hosts` A rrsets, validated concurrently.
2. DKIM: `copies` DKIM-Signatures over a `mb` MB body.
3. DKIM with a body of blank runs (`blank-mb` MB): dkimpy's relaxed body
   canonicalisation turns quadratic, in one C call that keeps the GIL.

For each: CPU seconds (this process and its children), wall seconds, the
longest event-loop stall seen by a coroutine that sleeps 10 ms in a loop, and
the verdict. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import format_datetime, formatdate

import dkim  # type: ignore[import-untyped]
import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone

from checks.core.config import CPULimits, EngineConfig, Nameserver, Timeouts
from checks.engine import sendtest
from checks.net.door import Network
from checks.rules.dnssec import Validator
from tests.lab.dkim import signing_key
from tests.support.keytrap import Trap, keytrap_zone
from tests.support.lagprobe import LagProbe
from tests.support.nanodns import NanoDNS, zone

MB = 1024 * 1024
PEER = "192.0.2.25"  # a documentation address: only ever looked up in the stand-in DNS


def cpu_seconds() -> float:
    """CPU time of this process and of its reaped children."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


async def measure(label: str, work: Callable[[], Awaitable[str]]) -> None:
    cpu, wall = cpu_seconds(), time.perf_counter()
    async with LagProbe() as lag:
        verdict = await work()
    cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
    print(
        f"  {label:10} CPU {cpu:6.2f} s  wall {wall:6.2f} s  "
        f"max loop stall {lag.worst * 1000:7.0f} ms  {verdict[:110]}"
    )


# -- 1. KeyTrap ------------------------------------------------------------------------


def serve_zone(trap: Trap) -> Callable[[dns.message.Message], bytes]:
    """Answers from the trap zone, RRSIGs included, as a resolver with DO set would."""
    parsed = dns.zone.from_text(trap.zone.render(), origin=trap.origin, relativize=False)

    def answer(query: dns.message.Message) -> bytes:
        # Whole over UDP however big (no truncation): loopback carries 64 KB datagrams.
        return found(query).to_wire(max_size=65535)

    def found(query: dns.message.Message) -> dns.message.Message:
        question = query.question[0]
        response = dns.message.make_response(query)
        response.flags |= dns.flags.RA
        node = parsed.get_node(question.name)
        data = node.get_rdataset(dns.rdataclass.IN, question.rdtype) if node else None
        if node is None or data is None:
            soa = parsed.get_rdataset(trap.origin, dns.rdatatype.SOA)
            assert soa is not None
            response.authority.append(dns.rrset.from_rdata_list(trap.origin, 300, list(soa)))
            return response
        response.answer.append(dns.rrset.from_rdata_list(question.name, 300, list(data)))
        sigs = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.RRSIG, question.rdtype)
        if sigs is not None:
            response.answer.append(dns.rrset.from_rdata_list(question.name, 300, list(sigs)))
        return response

    return answer


async def keytrap(keys: int, signatures: int, hosts: int) -> None:
    trap = keytrap_zone(keys=keys, signatures=signatures, hosts=hosts)
    parsed = dns.zone.from_text(trap.zone.render(), origin=trap.origin, relativize=False)
    dnskeys = parsed.find_rdataset(trap.origin, dns.rdatatype.DNSKEY)
    apex = trap.origin.to_text()
    names = ([(apex, "MX")], [(f"h{i}.{apex}", "A") for i in range(hosts)])
    titles = (
        f"1. KeyTrap: {signatures} RRSIGs naming one tag, {keys} DNSKEYs sharing it",
        f"   ... and the same over {hosts} more rrsets, validated at once",
    )
    with NanoDNS(serve_zone(trap), address="127.1.0.98") as server:
        config = EngineConfig(
            nameservers=(Nameserver(server.address, server.port),),
            trust_anchors=(trap.anchor,),
        )
        for title, asked in zip(titles, names, strict=True):
            print(title)

            async def unbounded(asked: list[tuple[str, str]] = asked) -> str:
                failed = checks = 0
                for name, rdtype in asked:  # as before: in the loop, every RRSIG, every key
                    kind = dns.rdatatype.from_text(rdtype)
                    rrset = parsed.find_rrset(name, kind)
                    for sig in parsed.find_rdataset(name, dns.rdatatype.RRSIG, kind):
                        checks += keys
                        try:
                            dns.dnssec.validate_rrsig(rrset, sig, {trap.origin: dnskeys})
                        except dns.dnssec.ValidationFailure:
                            failed += 1
                return f"bogus: {failed} RRSIGs fail, {checks} checks"

            async def bounded(asked: list[tuple[str, str]] = asked) -> str:
                validator = Validator(Network(config))
                found = await asyncio.gather(*(validator.validate(n, t) for n, t in asked))
                statuses = sorted({v.status.value for v in found})
                return f"{'/'.join(statuses)}, {validator.verifications} checks: {found[-1].reason}"

            await measure("unbounded", unbounded)
            await measure("bounded", bounded)


# -- 2 and 3. DKIM -------------------------------------------------------------------------


def signed(pem: bytes, body: bytes, copies: int, canonicalize: tuple[bytes, bytes]) -> bytes:
    """`copies` of one DKIM-Signature (each verifies alone) over `body`."""
    headers = (
        "From: Alice <alice@example.com>\r\nTo: st-abc@sendtest.example.net\r\n"
        f"Subject: bench\r\nDate: {format_datetime(datetime.now(UTC))}\r\n"
        "Message-ID: <bench@example.com>\r\n\r\n"
    )
    message = headers.encode() + body
    signature = dkim.sign(
        message,
        b"s1",
        b"example.com",
        pem,
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
        canonicalize=canonicalize,
    )
    return bytes(signature) * copies + message


async def dkim_attack(title: str, message: bytes, copies: int, txt: str, limits: CPULimits) -> None:
    print(title)
    public = txt.replace('"', "").replace(" ", "").encode()

    async def unbounded() -> str:
        passed = 0
        for idx in range(copies):  # as before: in the loop, every signature
            verifier = dkim.DKIM(message)
            with contextlib.suppress(dkim.DKIMException):
                passed += bool(verifier.verify(idx=idx, dnsfunc=lambda name, timeout=5: public))
        return f"{passed} of {copies} signatures pass"

    records = {
        ("s1._domainkey.example.com.", "TXT"): [txt],
        ("example.com.", "TXT"): [f'"v=spf1 ip4:{PEER} -all"'],
    }
    with NanoDNS(zone(records), address="127.1.0.98") as server:
        config = EngineConfig(
            nameservers=(Nameserver(server.address, server.port),),
            timeouts=Timeouts(dns=2.0, check=120),
            dnsbl_zones=("bl.example",),
            cpu=limits,
        )
        received = sendtest.Received(
            token="abc",
            peer=PEER,
            helo="mail.example.com",
            esmtp=True,
            mail_from="bounce@example.com",
            recipients=("st-abc@sendtest.example.net",),
            tls=None,
            received_at=time.time(),
            message=message,
            receiver="mx.sendtest.example.net",
        )

        async def bounded() -> str:
            request = sendtest.request_for("example.com")
            report = await sendtest.judge_message(received, request, config)
            work = report.facts.get("sendtest.dkim.work", {})
            skipped = [f.summary for f in report.findings if f.code == "sendtest.dkim.skipped"]
            return f"{work.get('verified')} checked, {work.get('skipped')} skipped: " + (
                skipped[0] if skipped else "none skipped"
            )

        await measure("unbounded", unbounded)
        await measure("bounded", bounded)


async def main_async(
    keys: int, signatures: int, hosts: int, mb: int, copies: int, blank_mb: int
) -> None:
    print(f"(generated {formatdate(localtime=True)}; CPU includes child processes)")
    await keytrap(keys, signatures, hosts)
    pem, txt = signing_key()
    line = b"The quick brown fox jumps over the lazy dog, again and again.\r\n"
    body = line * (mb * MB // len(line))
    message = signed(pem, body, copies, (b"relaxed", b"simple"))
    await dkim_attack(
        f"2. DKIM: {copies} signatures over a {mb} MB body", message, copies, txt, CPULimits()
    )
    blanks = b" " * 998 + b"x\r\n"
    message = signed(pem, b"Hello.\r\n", 1, (b"relaxed", b"relaxed")).replace(
        b"Hello.\r\n", blanks * (blank_mb * MB // len(blanks))
    )
    limits = CPULimits()
    await dkim_attack(
        f"3. DKIM: one relaxed signature over {blank_mb} MB of blank runs "
        f"(deadline {limits.dkim_seconds:g} s)",
        message,
        1,
        txt,
        limits,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=12)
    parser.add_argument("--signatures", type=int, default=40)
    parser.add_argument("--hosts", type=int, default=16)
    parser.add_argument("--mb", type=int, default=10)
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--blank-mb", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(
        main_async(args.keys, args.signatures, args.hosts, args.mb, args.copies, args.blank_mb)
    )


if __name__ == "__main__":
    main()
