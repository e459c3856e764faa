"""The hostile zones of issue 16 and a listener that counts what they cost,
for tests/unit/test_budgets.py and bench/budgets.py.

    with NanoDNS(served(mx_flood_zone(addresses))) as dns_server:
        async with SMTPListener(addresses) as listener:   # port 25: needs root
            ...
        listener.connections, listener.most_open

Flood addresses are in 127.77.0.0/16: loopback, outside the lab's 127.1/16.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable

import dns.message

from checks.core.config import Budgets, EngineConfig, Nameserver, Timeouts
from checks.core.targets import TargetPolicy, parse_networks
from tests.support.fakeserver import FakeServer
from tests.support.nanodns import NanoDNS, zone

FLOOD_NET = "127.77.0.0/16"

Records = dict[tuple[str, str], list[str]]


def flood_config(server: NanoDNS, budgets: Budgets, check: float = 90) -> EngineConfig:
    """The engine on the flood zones' DNS server, allowed to reach FLOOD_NET."""
    return EngineConfig(
        nameservers=(Nameserver(server.address, server.port),),
        policy=TargetPolicy(parse_networks([FLOOD_NET])),
        timeouts=Timeouts(dns=2, connect=2, banner=2, reply=2, check=check),
        dnsbl_zones=("bl.flood.test",),
        ispdb_url="",
        budgets=budgets,
    )


def flood_addresses(count: int) -> list[str]:
    """`count` addresses from 127.77.0.1 up (256 a /24)."""
    first = ipaddress.IPv4Address("127.77.0.1")
    return [str(first + i) for i in range(count)]


def mx_flood_zone(addresses: list[str]) -> Records:
    """flood.test: one MX host with every address of `addresses`."""
    return {
        ("flood.test.", "MX"): ["10 mx.flood.test."],
        ("mx.flood.test.", "A"): addresses,
    }


def spf_flood_zone(includes: int, terms: int) -> Records:
    """attacker.test: an SPF record of `includes` includes, each a record of
    `terms` distinct `a:` names under victim.test. Its MX host is on a
    documentation address, which the target policy refuses."""

    def txt(text: str) -> str:  # character-strings of at most 255 bytes
        return " ".join(f'"{text[i : i + 250]}"' for i in range(0, len(text), 250))

    top = " ".join(f"include:s{n}.attacker.test" for n in range(includes))
    records = {
        ("attacker.test.", "MX"): ["10 mx.attacker.test."],
        ("mx.attacker.test.", "A"): ["192.0.2.1"],
        ("attacker.test.", "TXT"): [txt(f"v=spf1 {top} -all")],
    }
    for n in range(includes):
        body = " ".join(f"a:h{n}-{i}.victim.test" for i in range(terms))
        records[(f"s{n}.attacker.test.", "TXT")] = [txt(f"v=spf1 {body} -all")]
    return records


def served(records: Records) -> Callable[[dns.message.Message], bytes]:
    """A NanoDNS handler answering from `records` whatever the answer's size:
    the stand-in has no TCP, and on loopback the client takes a large
    datagram as it would take the TCP answer."""
    answer = zone(records)
    return lambda query: answer(query).to_wire(max_size=65535)


class SMTPListener:
    """Port 25 on every address given: greets (after `hold` seconds), answers
    EHLO without STARTTLS, says goodbye. Counts the connections it accepts,
    and the most open at once in one /24."""

    def __init__(self, addresses: list[str], hold: float = 0.0) -> None:
        self.hold = hold
        self.open: dict[str, int] = {}
        self.most_open = 0
        # asyncio.start_server takes a list of hosts: one socket each.
        self.server = FakeServer(self.talk, address=addresses, port=25)  # type: ignore[arg-type]

    @property
    def connections(self) -> int:
        return self.server.connections

    async def talk(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        net = writer.get_extra_info("sockname")[0].rsplit(".", 1)[0]
        self.open[net] = self.open.get(net, 0) + 1
        self.most_open = max(self.most_open, self.open[net])
        try:
            await asyncio.sleep(self.hold)
            writer.write(b"220 mx.flood.test ESMTP\r\n")
            while line := await reader.readline():
                if line.upper().startswith(b"QUIT"):
                    writer.write(b"221 bye\r\n")
                    break
                writer.write(b"250 mx.flood.test\r\n")
                await writer.drain()
            await writer.drain()
        finally:
            self.open[net] -= 1

    async def __aenter__(self) -> SMTPListener:
        await self.server.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.__aexit__(*exc)
