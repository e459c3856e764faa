"""The send test's speed: the judgement, the path through the lab, the receiver.

    .venv/bin/python -m tests.lab up      # first: Postfix, OpenDKIM, NSD, Redis
    .venv/bin/python -m bench.sendtest [--runs 10] [--messages 200] [--clients 8]

1. judge: how long judging one received message takes (reverse DNS, HELO,
   SPF, DKIM, DMARC, headers, blocklist against the lab's NSD);
2. end to end: from handing a message to the lab's Postfix as send-ok.test to
   the verdict (Postfix's queue, its SMTP to our receiver with STARTTLS, the
   store in Redis, the judgement);
3. receiver: messages per second the receiver accepts (and stores in Redis)
   from `clients` concurrent senders on distinct source addresses, and the
   peak RSS of this process, which runs it.

Prints figures; asserts nothing. Uses Redis database 9 of the lab's Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import smtplib
import statistics
import time
from email.utils import formatdate, make_msgid

from redis.asyncio import Redis

from bot.receiver import Receiver, tls_context
from bot.testaddresses import SendTest, SendTests
from checks.core.config import EngineConfig, Nameserver, Timeouts
from checks.core.model import Severity
from checks.core.targets import TargetPolicy, parse_networks
from checks.engine import sendtest
from checks.engine.sendtest import Received
from tests.lab.control import Lab, running_root
from tests.lab.senders import RECEIVER_ADDRESS, RECEIVER_DOMAIN, RECEIVER_HOST, RECEIVER_PORT
from tests.lab.zones import NS_ADDRESS

SENDER = "send-ok.test"
BENCH_PORT = 2525  # the receiver's port for part 3 (Postfix keeps using 25)


def message(to: str, domain: str = SENDER) -> bytes:
    return (
        f"From: bench@{domain}\r\nTo: {to}\r\nSubject: bench\r\nDate: {formatdate()}\r\n"
        f"Message-ID: {make_msgid(domain=domain)}\r\n\r\n" + ("x" * 98 + "\r\n") * 20
    ).encode()


def config() -> EngineConfig:
    return EngineConfig(
        nameservers=(Nameserver(NS_ADDRESS),),
        policy=TargetPolicy(parse_networks(["127.1.0.0/16"])),
        timeouts=Timeouts(dns=2.0, check=30),
        dnsbl_zones=("bl.test",),
    )


async def end_to_end(lab: Lab, tests: SendTests, runs: int) -> tuple[list[float], list[float]]:
    """(seconds from sendmail to the verdict, seconds the judgement took), per run."""
    totals, judged = [], []
    request = sendtest.request_for(SENDER)
    for _ in range(runs):
        test = await tests.create(SENDER, SENDER)
        t0 = time.perf_counter()
        await asyncio.to_thread(lab.mail.send, f"b@{SENDER}", [test.address], message(test.address))
        received = await tests.wait(test.token, 60)
        if received is None:
            raise SystemExit("no message arrived: is the lab up (python -m tests.lab up)?")
        t1 = time.perf_counter()
        report = await sendtest.judge(received, request, config())
        t2 = time.perf_counter()
        await tests.finish(test.token)
        if report.at_least(Severity.WARNING):
            raise SystemExit(f"send-ok.test is not healthy: {report.at_least(Severity.WARNING)}")
        totals.append(t2 - t0)
        judged.append(t2 - t1)
    return totals, judged


async def throughput(tests: SendTests, messages: int, clients: int) -> float:
    """Messages per second accepted from `clients` concurrent plain-SMTP senders."""
    accepted: list[Received] = []

    async def arrived(received: Received, test: SendTest) -> None:
        accepted.append(received)

    server = Receiver(
        tests,
        arrived,
        host=RECEIVER_ADDRESS,
        port=BENCH_PORT,
        hostname=RECEIVER_HOST,
        concurrent=4,
        per_hour=0,
        # Throughput, not the limits: each sender a network of its own, and
        # each session as many messages as it is given.
        total=clients + 1,
        v4_prefix=32,
        max_commands=3 * messages + 10,
    )
    await server.start()
    tokens = [(await tests.create("bench.test", "bench.test")).address for _ in range(messages)]

    def sender(index: int) -> None:
        source = f"127.1.43.{index + 1}"
        with smtplib.SMTP(RECEIVER_ADDRESS, BENCH_PORT, source_address=(source, 0)) as smtp:
            for address in tokens[index::clients]:
                smtp.sendmail(f"b@{SENDER}", [address], message(address))

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(asyncio.to_thread(sender, i) for i in range(clients)))
    finally:
        elapsed = time.perf_counter() - t0
        await server.stop()
    if len(accepted) != messages:
        raise SystemExit(f"the receiver took {len(accepted)} of {messages} messages")
    return messages / elapsed


async def main_async(runs: int, messages: int, clients: int) -> None:
    root = running_root()
    if root is None:
        raise SystemExit("the lab is not running: .venv/bin/python -m tests.lab up")
    lab = Lab(root)
    redis = Redis.from_url(lab.redis.url.rsplit("/", 1)[0] + "/9")
    await redis.flushdb()
    tests = SendTests(redis, RECEIVER_DOMAIN, ttl=600)
    pki = lab.mail.pki
    receiver = Receiver(
        tests,
        lambda r, t: asyncio.sleep(0),
        host=RECEIVER_ADDRESS,
        port=RECEIVER_PORT,
        hostname=RECEIVER_HOST,
        tls=tls_context(str(pki.cert_path(RECEIVER_HOST)), str(pki.key_path(RECEIVER_HOST))),
        per_hour=0,
    )
    await receiver.start()
    await asyncio.to_thread(lab.mail.flush)
    try:
        totals, judged = await end_to_end(lab, tests, runs)
    finally:
        await receiver.stop()
    rate = await throughput(tests, messages, clients)
    await redis.flushdb()
    await redis.aclose()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ms = lambda xs: f"median {statistics.median(xs) * 1000:7.1f} ms (max {max(xs) * 1000:.1f})"  # noqa: E731
    print(f"send test of {SENDER}, {runs} runs")
    print(f"  judgement:                {ms(judged)}")
    print(f"  sendmail -> verdict:      {ms(totals)}")
    print(f"receiver, {messages} messages of {len(message('x'))} bytes from {clients} senders")
    print(f"  accepted and stored:      {rate:7.1f} messages/s")
    print(f"  peak RSS (this process):  {rss:7.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(main_async(args.runs, args.messages, args.clients))


if __name__ == "__main__":
    main()
