"""The one door to the network.

Every DNS name the engine looks up goes through `Network.query`, on our own
resolver (the configured nameservers, never the system resolver when some are
configured); every address is checked against the target policy before a
connection; every step has a timeout; every exchange is written to the
transcript of the probe that made it.

Lookups run a stub resolver's resolution here (`Network._resolve`: the
nameservers in turn, retries, rcodes, TCP after truncation) over
`exchange_udp`, a plain socket per query; dnspython makes and parses the
messages and follows CNAME chains. dnspython's own resolver and datagram
endpoint cost more CPU than the queries they send, and a warm process asks
the same questions and gets the same answers again and again, so the query
for a question is rendered once and a datagram seen before is not parsed
again.

dnspython's exceptions are translated into `checks.core.errors` here and nowhere
else. Answers are memoised per check, so two probes asking the same question
share one query (and see the same answer).
"""

from __future__ import annotations

import asyncio
import copy
import functools
import socket
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Coroutine,
    Iterable,
    Iterator,
)
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

import dns.asyncquery
import dns.entropy
import dns.exception
import dns.flags
import dns.inet
import dns.message
import dns.name
import dns.nameserver
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.reversename
import dns.rrset

from checks.core.answers import DNSAnswer, SignedAnswer
from checks.core.config import EngineConfig
from checks.core.errors import (
    ConnectFailed,
    ConnectRefused,
    ConnectTimeout,
    DNSError,
    NetError,
    NXDomain,
    QueryBudgetExceeded,
    ResolverFailure,
    ResolverTimeout,
)
from checks.core.model import Target
from checks.net.budget import Ledger
from checks.net.conn import Connection

# The transcript of the probe currently running. A ContextVar, because asyncio
# copies the context into every task a probe starts, so lookups made deep
# inside gathered sub-tasks still land in their probe's transcript.
_transcript: ContextVar[list[str] | None] = ContextVar("mailcheck_transcript", default=None)


A = TypeVar("A")

# Connections one check opens at once to one address:port: a mail client opens
# several too, and a second lets the legacy-TLS probe run beside the main one.
PER_PORT = 2


@contextmanager
def recording(lines: list[str]) -> Iterator[None]:
    """Send transcript lines from this context (and tasks it starts) to `lines`."""
    token = _transcript.set(lines)
    try:
        yield
    finally:
        _transcript.reset(token)


def note(line: str) -> None:
    """Append a line to the current probe's transcript, if any."""
    lines = _transcript.get()
    if lines is not None:
        lines.append(line)


def nameservers(config: EngineConfig) -> tuple[tuple[str, int], ...]:
    """The (address, port) of each nameserver the door asks, in order: the
    configured ones, else the system's, read from /etc/resolv.conf as
    dnspython reads it (none when it names none)."""
    if config.nameservers:
        return tuple((ns.address, ns.port) for ns in config.nameservers)
    try:
        system = dns.resolver.Resolver()
    except dns.resolver.NoResolverConfiguration:
        return ()
    found: list[tuple[str, int]] = []
    for ns in system.nameservers:
        if isinstance(ns, dns.nameserver.Do53Nameserver):
            found.append((ns.address, ns.port))
        elif isinstance(ns, str) and dns.inet.is_address(ns):
            found.append((ns, system.nameserver_ports.get(ns, system.port)))
    return tuple(found)


@functools.lru_cache(maxsize=4096)
def _template(name: str, rdtype: str) -> dns.message.QueryMessage:
    """The query a stub resolver sends for name/rdtype (RD, EDNS0 with a
    1,232-byte payload), made once per process; `_request` gives it an ID."""
    return dns.message.make_query(dns.name.from_text(name), rdtype, use_edns=0, payload=1232)


def _request(name: str, rdtype: str) -> dns.message.QueryMessage:
    request = copy.copy(_template(name, rdtype))
    request.id = dns.entropy.random_16()
    return request


async def exchange_udp(
    query: dns.message.Message,
    address: str,
    port: int,
    timeout: float,
    *,
    strict: bool = False,
    answer_only: bool = False,
) -> tuple[dns.message.Message, bool]:
    """The answer of address:port to `query` over UDP, or over TCP when the
    UDP answer is truncated (within what is left of `timeout`): (response,
    whether TCP gave it): dns.asyncquery.udp_with_fallback without its
    datagram endpoint. Silence raises dns.exception.Timeout.

    Datagrams that do not parse or answer another question are ignored, as
    dnspython's ignore_unexpected does; `strict` makes the first datagram the
    answer instead (its parse error, or dns.query.BadResponse), which is what
    asking one server directly reports about it. With `answer_only`, a
    NOERROR answer over UDP comes without its authority and additional
    sections (a stub resolver's caller reads the answer section alone, and
    skipping the rest halves the cost of reading it)."""
    deadline = time.monotonic() + timeout
    try:
        return await _udp(query, address, port, timeout, strict, answer_only), False
    except dns.message.Truncated:
        remaining = max(deadline - time.monotonic(), 0.0)
        return await dns.asyncquery.tcp(query, address, timeout=remaining, port=port), True


_WIRES: dict[tuple[Any, ...], bytes] = {}  # a question's wire form, its ID zeroed (bounded)


def _wire(query: dns.message.Message) -> bytes:
    """`query.to_wire()`, from the form last rendered for the same question
    and options with only the ID changed: a warm process asks the same
    questions again and again, and rendering one costs more than sending it."""
    if (
        len(query.question) != 1
        or query.sections[1:] != [[], [], []]
        or query.options
        or query.keyring
    ):
        return query.to_wire()
    question = query.question[0]
    key = (question.name, question.rdtype, question.rdclass, query.flags, query.edns,
           query.payload, query.ednsflags)  # fmt: skip
    template = _WIRES.get(key)
    if template is None:
        template = query.to_wire()
        if len(_WIRES) >= 4096:
            _WIRES.clear()
        _WIRES[key] = template
    return query.id.to_bytes(2, "big") + template[2:]


_ANSWERS = frozenset({dns.rcode.NOERROR, dns.rcode.NXDOMAIN})  # rcodes that answer a question
_STUB_ANSWERS = _ANSWERS | {dns.rcode.YXDOMAIN}  # a stub lookup reports YXDOMAIN itself
_KEPT_SIZE = 1232  # the EDNS payload our queries offer; a bigger answer is not kept


def _parse(datagram: bytes, answer_only: bool = False) -> dns.message.Message:
    """The message in `datagram`; a datagram seen before (its ID aside) is
    not parsed again (see `_parsed`), unless it is bigger than the payload
    our queries offer (a hostile server's 64 kB datagrams would fill the memo
    with megabytes). `answer_only`: see exchange_udp."""
    if len(datagram) < 12 or len(datagram) > _KEPT_SIZE or datagram[2] & 0x02:
        # Short (an error), too big to keep, or truncated (the error carries the message)
        return dns.message.from_wire(datagram, raise_on_truncation=True)
    body = datagram[2:]
    answer_only = answer_only and datagram[3] & 0x0F == dns.rcode.NOERROR
    if answer_only:  # NSCOUNT and ARCOUNT zeroed: the sections after the answer go unread
        body = body[:6] + b"\0\0\0\0" + body[10:]
    response = copy.copy(_parsed(body, answer_only))
    response.id = int.from_bytes(datagram[:2], "big")
    return response


@functools.lru_cache(maxsize=1024)
def _parsed(body: bytes, answer_only: bool = False) -> dns.message.Message:
    """A DNS message from its wire form without the ID: the same bytes parse
    to the same message, so a warm process parses each answer once (the
    nameserver's own records, a watched domain checked again). Shared: never
    changed by its readers."""
    return dns.message.from_wire(
        b"\0\0" + body, raise_on_truncation=True, ignore_trailing=answer_only
    )


async def _udp(
    query: dns.message.Message,
    address: str,
    port: int,
    timeout: float,
    strict: bool,
    answer_only: bool = False,
) -> dns.message.Message:
    """One UDP exchange on a fresh socket (a fresh random source port each
    query), connect()ed so that only the server's datagrams arrive. A
    truncated answer raises dns.message.Truncated; see exchange_udp."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(dns.inet.af_for_address(address), socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.connect((address, port))
        sock.send(_wire(query))  # one datagram into a fresh socket's empty buffer
        async with asyncio.timeout(timeout):
            while True:
                try:
                    datagram = await loop.sock_recv(sock, 65535)
                except ConnectionRefusedError:
                    # An ICMP port unreachable, which an unconnected socket
                    # (dnspython's) never hears of: silence, as before.
                    continue
                try:
                    response = _parse(datagram, answer_only)
                except dns.message.Truncated as exc:
                    if strict or query.is_response(exc.message()):  # type: ignore[no-untyped-call]
                        raise
                    continue
                except Exception:
                    if strict:
                        raise
                    continue
                if query.is_response(response):
                    return response
                if strict:
                    raise dns.query.BadResponse
    except TimeoutError as exc:
        raise dns.exception.Timeout(timeout=timeout) from exc  # type: ignore[no-untyped-call]
    finally:
        sock.close()


class Politeness:
    """Connections open at once to one address:port, across the checks that
    share this (a batch in one process). Each check opens one at a time per
    address:port; without a shared bound, a batch of 100 domains hosted by one
    provider would open 100 at once to its MX, which postscreen and
    connection-rate limits take for an attack. A slot lives while it is used
    or waited for, so a long batch keeps nothing per address it once met."""

    def __init__(self, per_port: int = 2) -> None:
        self.per_port = per_port
        self._slots: dict[tuple[str, int], _Slot] = {}

    @asynccontextmanager
    async def turn(self, address: str, port: int) -> AsyncIterator[None]:
        """Hold one of the address:port's slots (wait for one to be free)."""
        key = (address, port)
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot(self.per_port)
        slot.users += 1
        try:
            async with slot.free:
                yield
        finally:
            slot.users -= 1
            if not slot.users:
                del self._slots[key]


class _Slot:
    def __init__(self, size: int) -> None:
        self.free = asyncio.Semaphore(size)
        self.users = 0  # holding or waiting


class Network:
    """The door, for one check: resolver, target policy, timeouts, memo."""

    def __init__(
        self,
        config: EngineConfig,
        politeness: Politeness | None = None,
    ) -> None:
        self.config = config
        self.policy = config.policy
        self.politeness = politeness  # shared with the other checks of a batch, if any
        self._servers: tuple[tuple[str, int], ...] | None = None  # see nameservers()
        self._memo: dict[tuple[str, str], asyncio.Task[DNSAnswer]] = {}
        self._dnssec_memo: dict[tuple[str, str], asyncio.Task[SignedAnswer]] = {}
        self._server_memo: dict[tuple[str, int, str, str], asyncio.Task[ServerAnswer]] = {}
        # Per-check caches of the stages (e.g. which server settings work).
        self.memo: dict[str, Any] = {}
        self._ports: dict[tuple[str, int], asyncio.Semaphore] = {}
        # Addresses that let a connect time out in this check, with what was
        # tried: later connects get that outcome at once (one timeout per host,
        # not one per probe). Port 25 is remembered for port 25 alone: it is
        # the port a checker's own network most often blocks outbound.
        self._silent: dict[tuple[str, int | None], str] = {}
        # Connects in flight, per address:port: a second waits for the first's
        # SYN to be answered, so a silent port is waited for once, not twice.
        self._dialing: dict[tuple[str, int], asyncio.Future[None]] = {}
        self._parting: set[asyncio.Task[None]] = set()  # goodbyes still being said
        self.budget = Ledger(config.budgets)  # this check's budgets (checks.net.budget)

    # -- connections ---------------------------------------------------------------

    @asynccontextmanager
    async def _turn(self, target: Target) -> AsyncIterator[tuple[str, int, str]]:
        """The gate every connection passes: the target policy before any
        packet, then one of this address:port's two slots. Yields (address, port, the
        transcript header). Every connection spends the check's budget
        (ConnectBudgetExceeded once it is spent) and waits for a slot of its
        /24 or /64, then for one of the batch's slots of the address:port."""
        address, port = target.address, target.port
        if address is None or port is None:
            raise ValueError("a connection needs an address and a port")
        self.policy.check(address)
        header = f"== {target.protocol or 'tcp'} {target.label()}"
        self._not_again(address, port, header)
        self.budget.spend_connection(address, port)
        async with (
            self._ports.setdefault((address, port), asyncio.Semaphore(PER_PORT)),
            self.budget.prefix_slot(address),
            self.politeness.turn(address, port) if self.politeness else nullcontext(),
        ):
            self._not_again(address, port, header)  # it timed out while this one waited
            yield address, port, header

    async def _dial(
        self, address: str, port: int, header: str, connect: Callable[[], Awaitable[A]]
    ) -> A:
        """Run `connect()` within the connect timeout, once no other connect to
        address:port is in flight (if that one timed out: ConnectTimeout at
        once, from the memo). Its failures as the door's errors."""
        key = (address, port)
        while (pending := self._dialing.get(key)) is not None:
            await asyncio.shield(pending)
            self._not_again(address, port, header)
        done = self._dialing[key] = asyncio.get_running_loop().create_future()
        timeout = self.config.timeouts.connect
        try:
            async with asyncio.timeout(timeout):
                return await connect()
        except OSError as exc:  # TimeoutError and ConnectionRefusedError among them
            if isinstance(exc, TimeoutError):
                self._timed_out(address, port, timeout)
            raise _connect_failure(header, exc, timeout) from exc
        finally:
            del self._dialing[key]
            done.set_result(None)

    def _not_again(self, address: str, port: int, header: str) -> None:
        """ConnectTimeout at once when `address` timed out earlier in this check."""
        earlier = self._silent.get((address, None)) or self._silent.get((address, port))
        if earlier is not None:
            note(f"{header}: not tried: {earlier}")
            raise ConnectTimeout(f"{earlier} (filtered?); not tried again")

    def _timed_out(self, address: str, port: int, timeout: float) -> None:
        key = (address, port) if port == 25 else (address, None)
        self._silent.setdefault(key, f"no answer within {timeout:g} s on port {port} earlier")

    @asynccontextmanager
    async def connect(self, target: Target) -> AsyncIterator[Connection]:
        """A conversation with `target` (address and port required).

        Raises TargetRefused before any packet when the policy forbids the
        address; ConnectRefused / ConnectTimeout / ConnectFailed otherwise.
        At most two connections per address:port are open at a time, as a
        mail client opens (polite to servers that count connections, and
        postscreen-safe), and two among the checks sharing a Politeness; later
        callers wait their turn. The conversation lands in the probe's
        transcript. A goodbye left with `Connection.leave` is said once the
        caller is done, in the background: the connection holds its slots
        until that is over.
        """
        slots = AsyncExitStack()  # held until the goodbye is over, maybe in the background
        address, port, header = await slots.enter_async_context(self._turn(target))
        try:
            started = time.monotonic()
            opened = functools.partial(asyncio.open_connection, address, port)
            reader, writer = await self._dial(address, port, header, opened)
        except BaseException:
            await slots.aclose()
            raise
        conn = Connection(reader, writer, target, self.config.limits, self.config.timeouts.reply)
        conn.note(f"-- connected in {(time.monotonic() - started) * 1000:.1f} ms")
        try:
            yield conn
        finally:
            note(header)
            for line in conn.transcript:
                note(f"  {line}")
            if conn.goodbye is None:
                try:
                    await conn.aclose()
                finally:
                    await slots.aclose()
            else:
                self._part(conn, conn.goodbye, slots)

    def _part(
        self, conn: Connection, goodbye: Coroutine[Any, Any, None], slots: AsyncExitStack
    ) -> None:
        """Finish a goodbye in the background, then close and free the slots."""

        async def part() -> None:
            try:
                async with asyncio.timeout(self.config.timeouts.reply):
                    await goodbye
            except (NetError, OSError):  # TimeoutError among them: a rude goodbye is no problem
                pass
            finally:
                try:
                    await conn.aclose()
                finally:
                    await slots.aclose()

        task = asyncio.ensure_future(part())
        self._parting.add(task)
        task.add_done_callback(self._parting.discard)

    @asynccontextmanager
    async def open_socket(self, target: Target) -> AsyncIterator[socket.socket]:
        """A connected socket to `target`, for libraries that speak the protocol
        themselves (aiosmtplib, aioimaplib): the same policy check, lock and
        connect timeout as `connect`, and the connect in the transcript."""
        async with self._turn(target) as (address, port, header):
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            connect = functools.partial(
                asyncio.get_running_loop().sock_connect, sock, (address, port)
            )
            try:
                await self._dial(address, port, header, connect)
            except BaseException:
                sock.close()
                raise
            note(f"{header}: connected")
            try:
                yield sock
            finally:
                # A TLS transport closes the socket itself, a moment after it is
                # told to: closing it under a live transport would free its
                # descriptor for the next socket while the loop still watches it.
                # It is usually done within a turn or two of the loop.
                for turn in range(104):
                    if sock.fileno() == -1:
                        break
                    await asyncio.sleep(0 if turn < 4 else 0.01)
                sock.close()

    # -- DNS -------------------------------------------------------------------

    def prefetch(self, questions: Iterable[tuple[str, str]]) -> None:
        """Ask these questions now, for probes that will ask them later (after
        the MX lookup, say): their answers are waiting in the memo by then. A
        question the budget has no room for is left to its probe, which
        reports it."""
        for key in (_question(name, rdtype) for name, rdtype in questions):
            if key in self._memo or self.budget.queries >= self.budget.budgets.dns_queries:
                continue
            self.budget.spend_query(*key)
            task = self._memo[key] = asyncio.ensure_future(self._query(*key))
            task.add_done_callback(_retrieved)

    async def query(self, name: str, rdtype: str) -> DNSAnswer:
        """Look up `name`/`rdtype`. Raises NXDomain or ResolverFailure; an
        existing name without such records gives an empty answer."""
        key = _question(name, rdtype)

        def shown(answer: DNSAnswer) -> str:
            cname = f" via CNAME {answer.canonical_name}" if answer.via_cname else ""
            return f"{cname} -> {', '.join(answer.texts()) or '(no records)'}"

        what = f"{key[1]} {key[0]}"
        return await self._remembered(self._memo, key, lambda: self._query(*key), what, shown)

    async def _remembered(
        self,
        memo: dict[Any, asyncio.Task[A]],
        key: Any,
        ask: Callable[[], Awaitable[A]],
        what: str,
        shown: Callable[[A], str],
    ) -> A:
        """One question asked once per check (memo), its answer or failure
        written to the transcript of every probe that asks it."""
        task = memo.get(key)
        if task is None:
            try:  # a new question spends the check's query budget; every key ends (name, type)
                self.budget.spend_query(*key[-2:])
            except QueryBudgetExceeded as exc:
                note(f"{what} -> {exc}")
                raise
            task = asyncio.ensure_future(ask())
            memo[key] = task
        started = time.monotonic()
        try:  # an answer already in needs no shield (a future and two callbacks)
            answer = task.result() if task.done() else await asyncio.shield(task)
        except DNSError as exc:
            note(f"{_ms(started)}  {what} -> {exc}")
            raise
        note(f"{_ms(started)}  {what}{shown(answer)}")
        return answer

    async def query_ptr(self, address: str) -> DNSAnswer:
        return await self.query(dns.reversename.from_address(address).to_text(), "PTR")

    async def _query(self, name: str, rdtype: str) -> DNSAnswer:
        try:
            request = _request(name, rdtype)
            if dns.rdatatype.is_metatype(request.question[0].rdtype):
                raise dns.resolver.NoMetaqueries
        except dns.exception.DNSException as exc:
            raise ResolverFailure(name, rdtype, f"{type(exc).__name__}: {exc}") from exc
        response = await self._resolve(request, name, rdtype)
        try:
            chain = response.resolve_chaining()  # type: ignore[attr-defined]
        except dns.exception.DNSException as exc:
            raise ResolverFailure(name, rdtype, f"{type(exc).__name__}: {exc}") from exc
        rrset = chain.answer
        return DNSAnswer(
            qname=name,
            rdtype=rdtype,
            canonical_name=chain.canonical_name.to_text().rstrip("."),
            records=tuple(rrset) if rrset is not None else (),
            ttl=rrset.ttl if rrset is not None else None,
        )

    async def _resolve(
        self, request: dns.message.QueryMessage, name: str, rdtype: str
    ) -> dns.message.Message:
        """A stub resolver's resolution, as dnspython's Resolver.resolve does
        it (search list off), on the door's own exchange (see `_in_turn`). A
        NOERROR answer is returned (its answer section alone); NXDOMAIN
        raises NXDomain."""
        response, _tcp, _where = await self._in_turn(
            request, name, rdtype, _STUB_ANSWERS, answer_only=True
        )
        if response.rcode() == dns.rcode.NXDOMAIN:
            raise NXDomain(name, rdtype, f"NXDOMAIN: {name} does not exist")
        if response.rcode() == dns.rcode.YXDOMAIN:
            raise ResolverFailure(name, rdtype, "YXDOMAIN: a DNAME made the name too long")
        return response

    async def _in_turn(
        self,
        request: dns.message.Message,
        name: str,
        rdtype: str,
        answers: Collection[int],
        *,
        strict: bool = False,
        answer_only: bool = False,
    ) -> tuple[dns.message.Message, bool, str]:
        """Ask the nameservers in turn, as dnspython's Resolver does: each
        attempt gets half of the lifetime `timeouts.dns` (at least 0.5 s),
        silence is retried (after a pause once every server left was silent),
        a server that answers with an rcode not in `answers`, garbage or a
        network error is dropped, a truncated answer is asked again over TCP.
        Returns (response, whether over TCP, the server as shown). Raises
        ResolverTimeout when the lifetime ends, ResolverFailure naming what
        each server said when every one was dropped."""
        lifetime = self.config.timeouts.dns
        attempt = max(lifetime / 2, 0.5)
        deadline = time.monotonic() + lifetime
        servers = list(self._nameservers())
        turn: list[tuple[str, int]] = list(servers)
        errors: list[str] = []
        pause = 0.1
        while True:
            if not turn:
                if not servers:
                    text = "; ".join(errors) or "no nameserver to ask"
                    raise ResolverFailure(name, rdtype, text)
                turn = list(servers)  # every one left was silent: again, after a pause
                await asyncio.sleep(min(pause, max(deadline - time.monotonic(), 0.0)))
                pause = min(pause * 2, 2.0)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ResolverTimeout(name, rdtype, f"no answer within {lifetime:g} s")
            address, port = turn.pop(0)
            where = address if port == 53 else f"{_host(address)}:{port}"
            try:
                response, tcp = await exchange_udp(
                    request,
                    address,
                    port,
                    min(attempt, remaining),
                    strict=strict,
                    answer_only=answer_only,
                )
            except dns.exception.Timeout:
                continue  # silence: this server stays in the turn
            except (dns.exception.DNSException, OSError, EOFError, ValueError) as exc:
                detail = str(exc).rstrip(".")
                errors.append(
                    f"{type(exc).__name__} from {where}" + (f" ({detail})" if detail else "")
                )
                servers.remove((address, port))
                continue
            if response.rcode() in answers:
                return response, tcp, where
            errors.append(f"{dns.rcode.to_text(response.rcode())} from {where}")
            servers.remove((address, port))

    def _nameservers(self) -> tuple[tuple[str, int], ...]:
        if self._servers is None:
            self._servers = nameservers(self.config)
        return self._servers

    async def ask_server(
        self, address: str, name: str, rdtype: str, port: int = 53
    ) -> ServerAnswer:
        """Ask one nameserver directly, without recursion (RD clear): what an
        admin asks with `dig +norec @server`. The target policy applies to the
        server's address (TargetRefused). Any rcode is an answer (REFUSED is
        data here); silence raises ResolverTimeout, a network error or garbage
        ResolverFailure. Memoised per server and question."""
        self.policy.check(address)
        key = (address, port, name.rstrip(".").lower() or ".", rdtype.upper())
        return await self._remembered(
            self._server_memo,
            key,
            lambda: self._ask_server(*key),
            f"@{address} {key[3]} {key[2]} +norec",
            lambda answer: f" -> {answer.summary()}",
        )

    async def _ask_server(self, address: str, port: int, name: str, rdtype: str) -> ServerAnswer:
        try:
            request = dns.message.make_query(name, rdtype, payload=1232)
        except dns.exception.DNSException as exc:
            raise ResolverFailure(name, rdtype, f"{type(exc).__name__}: {exc}") from exc
        request.flags &= ~dns.flags.RD
        lifetime = self.config.timeouts.dns
        attempt = max(lifetime / 2, 0.5)
        deadline = time.monotonic() + lifetime
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                response, tcp = await exchange_udp(
                    request, address, port, min(attempt, remaining), strict=True
                )
            except dns.exception.Timeout:
                continue
            except (dns.exception.DNSException, OSError, EOFError, ValueError) as exc:
                detail = str(exc).rstrip(".") or type(exc).__name__
                raise ResolverFailure(name, rdtype, f"{address}: {detail}") from exc
            return ServerAnswer(
                qname=name,
                rdtype=rdtype,
                server=address,
                rcode=dns.rcode.to_text(response.rcode()),
                aa=bool(response.flags & dns.flags.AA),
                answer=tuple(response.answer),
                authority=tuple(response.authority),
                tcp=tcp,
            )
        raise ResolverTimeout(name, rdtype, f"{address} did not answer within {lifetime:g} s")

    def dig(self, name: str, rdtype: str) -> str:
        """The dig command that repeats a lookup by hand, against the same resolver."""
        server = ""
        if self.config.nameservers:
            ns = self.config.nameservers[0]
            server = f" @{ns.address}" + (f" -p {ns.port}" if ns.port != 53 else "")
        if rdtype.upper() == "PTR" and not name.endswith(".arpa"):
            return f"dig +short -x {name}{server}"
        return f"dig +short {rdtype.upper()} {name}{server}"

    def resolver_label(self) -> str:
        if self.config.nameservers:
            return ", ".join(str(ns) for ns in self.config.nameservers)
        return "system resolver"

    def close(self) -> None:
        memos = (self._memo, self._dnssec_memo, self._server_memo)
        for task in (t for memo in memos for t in memo.values()):
            task.cancel()

    # -- DNSSEC ----------------------------------------------------------------

    async def query_dnssec(self, name: str, rdtype: str) -> SignedAnswer:
        """Look up `name`/`rdtype` with DO and CD set, keeping the whole answer.

        DO asks for the RRSIG, NSEC and NSEC3 records; CD asks a validating
        resolver to hand over data it judges bogus instead of a SERVFAIL, so
        that checks.rules.dnssec can say *why* it is bogus. NXDOMAIN is returned
        (its authority section is evidence), not raised; SERVFAIL, REFUSED,
        garbage and silence raise ResolverFailure / ResolverTimeout. Memoised
        apart from `query`: the two ask different questions.
        """
        key = (name.rstrip(".").lower() or ".", rdtype.upper())
        return await self._remembered(
            self._dnssec_memo,
            key,
            lambda: self._query_dnssec(*key),
            f"{key[1]} {key[0]} +dnssec",
            lambda answer: f" -> {answer.summary()}",
        )

    async def _query_dnssec(self, name: str, rdtype: str) -> SignedAnswer:
        """Ask the nameservers in turn (`_in_turn`), as `query` does; an
        NXDOMAIN answer is data here, its authority section evidence."""
        try:
            request = dns.message.make_query(
                name,
                rdtype,
                want_dnssec=True,
                payload=1232,
                flags=dns.flags.RD | dns.flags.CD,
            )
        except dns.exception.DNSException as exc:
            raise ResolverFailure(name, rdtype, f"{type(exc).__name__}: {exc}") from exc
        response, tcp, where = await self._in_turn(request, name, rdtype, _ANSWERS, strict=True)
        return SignedAnswer(
            qname=name,
            rdtype=rdtype,
            rcode=dns.rcode.Rcode.make(response.rcode()),
            answer=tuple(response.answer),
            authority=tuple(response.authority),
            server=where,
            tcp=tcp,
        )


@dataclass(frozen=True)
class ServerAnswer:
    """One nameserver's own answer to a non-recursive question."""

    qname: str
    rdtype: str
    server: str  # the address asked
    rcode: str  # "NOERROR", "NXDOMAIN", "REFUSED", "SERVFAIL"...
    aa: bool  # the Authoritative Answer flag: the server serves this zone
    answer: tuple[dns.rrset.RRset, ...]
    authority: tuple[dns.rrset.RRset, ...]
    tcp: bool

    def records(self, rdtype: str | None = None, name: str | None = None) -> list[Any]:
        """The rdata in the answer section of `rdtype` (default: the type asked)
        owned by `name` (default: the name asked)."""
        owner = dns.name.from_text(name or self.qname)
        wanted = dns.rdatatype.from_text(rdtype or self.rdtype)
        return [r for rs in self.answer if rs.name == owner and rs.rdtype == wanted for r in rs]

    def referral(self) -> list[str]:
        """The NS names of a referral (authority section NS, no AA), lower case."""
        if self.aa:
            return []
        return sorted(
            r.target.to_text().rstrip(".").lower()
            for rs in self.authority
            if rs.rdtype == dns.rdatatype.NS
            for r in rs
        )

    def summary(self) -> str:
        shown = ", ".join(r.to_text() for r in self.records()) or "(no records)"
        if self.rcode != "NOERROR":
            shown = self.rcode
        elif not self.aa and self.referral():
            shown = "referral to " + ", ".join(self.referral())
        return shown + ("" if self.aa else " [not authoritative]") + (" [TCP]" if self.tcp else "")


def _question(name: str, rdtype: str) -> tuple[str, str]:
    """The memo's key for a question: one per name (any case, dot or not) and type."""
    return (name.rstrip(".").lower(), rdtype.upper())


def _retrieved(task: asyncio.Task[Any]) -> None:
    """A prefetched answer nobody asked for: its failure is no error to log."""
    if not task.cancelled():
        task.exception()


def _connect_failure(header: str, exc: OSError, timeout: float) -> NetError:
    """The engine's error for a failed connect, noted in the transcript."""
    if isinstance(exc, TimeoutError):
        note(f"{header}: no answer to connect within {timeout:g} s")
        return ConnectTimeout(f"no answer within {timeout:g} s (filtered?)")
    if isinstance(exc, ConnectionRefusedError):
        note(f"{header}: connection refused")
        return ConnectRefused("connection refused")
    note(f"{header}: {exc.strerror or exc}")
    return ConnectFailed(str(exc.strerror or exc))


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _ms(started: float) -> str:
    return f"[{(time.monotonic() - started) * 1000:7.1f} ms]"
