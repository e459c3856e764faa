"""A userspace latency proxy for the lab (this kernel has no netem qdisc).

UDP: every datagram from a client is forwarded to the upstream after half the
round-trip delay, and every reply travels back after the other half, so a
query through the proxy costs `rtt` more than one sent directly. TCP (for the
connect stages) adds the same delay to each chunk in each direction.

Listens and forwards on loopback only: `DelayProxy(listen=("127.1.0.153", 53),
upstream=("127.1.0.53", 53), rtt=0.05)`.
"""

from __future__ import annotations

import asyncio
from typing import Any


def _loopback(host: str) -> None:
    if not (host.startswith("127.") or host == "::1"):
        raise ValueError(f"the delay proxy works on loopback only, not {host}")


class _UDPClientSide(asyncio.DatagramProtocol):
    def __init__(self, proxy: DelayProxy) -> None:
        self.proxy = proxy
        self.transport: Any = None
        self.upstreams: dict[Any, asyncio.DatagramTransport] = {}

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.proxy.datagrams += 1
        self.proxy.arrivals.append((asyncio.get_running_loop().time(), data))
        asyncio.get_running_loop().create_task(self._forward(data, addr))

    async def _forward(self, data: bytes, addr: Any) -> None:
        await asyncio.sleep(self.proxy.rtt / 2)
        upstream = self.upstreams.get(addr)
        if upstream is None:
            loop = asyncio.get_running_loop()
            upstream, _ = await loop.create_datagram_endpoint(
                lambda: _UDPUpstreamSide(self, addr), remote_addr=self.proxy.upstream
            )
            self.upstreams[addr] = upstream
        upstream.sendto(data)


class _UDPUpstreamSide(asyncio.DatagramProtocol):
    def __init__(self, client_side: _UDPClientSide, client: Any) -> None:
        self.client_side = client_side
        self.client = client

    def datagram_received(self, data: bytes, addr: Any) -> None:
        async def back() -> None:
            await asyncio.sleep(self.client_side.proxy.rtt / 2)
            self.client_side.transport.sendto(data, self.client)

        asyncio.get_running_loop().create_task(back())


class DelayProxy:
    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int], rtt: float) -> None:
        _loopback(listen[0])
        _loopback(upstream[0])
        self.listen = listen
        self.upstream = upstream
        self.rtt = rtt
        self.datagrams = 0
        self.arrivals: list[tuple[float, bytes]] = []  # (loop time, datagram) from clients
        self.open = 0  # TCP connections open through the proxy now
        self.most_open = 0  # and at most, so far
        self._udp: _UDPClientSide | None = None
        self._tcp: asyncio.AbstractServer | None = None

    async def start(self, udp: bool = True, tcp: bool = True) -> None:
        loop = asyncio.get_running_loop()
        if udp:
            _, self._udp = await loop.create_datagram_endpoint(
                lambda: _UDPClientSide(self), local_addr=self.listen
            )
        if tcp:
            self._tcp = await asyncio.start_server(self._tcp_client, *self.listen)

    async def stop(self) -> None:
        if self._udp is not None:
            for upstream in self._udp.upstreams.values():
                upstream.close()
            self._udp.transport.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            await self._relay(reader, writer)
        except asyncio.CancelledError:  # the bench is over: nothing to report
            writer.close()
        finally:
            self.open -= 1

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(self.rtt / 2)  # the SYN's half of the handshake delay
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        await asyncio.sleep(self.rtt / 2)
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Each chunk leaves rtt/2 after it arrived, as on a wire: a burst of
        chunks is delayed once, not once per chunk."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    return
                await asyncio.sleep(max(0.0, due - loop.time()))
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((loop.time() + self.rtt / 2, data))
            queue.put_nowait((loop.time() + self.rtt / 2, b""))
            await sender
        finally:
            sender.cancel()
            writer.close()
