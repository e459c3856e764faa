"""The Slack bot under load: slash-command ack latency, then worker throughput.

    .venv/bin/python -m bench.bot [--commands 50] [--checks 20] [--workers 1] [--channels N]

The lab must be up (`python -m tests.lab up`). Everything stays on 127.1.0.0/16:
the Slack Web API stand-in on 127.1.0.80, the Bolt app (HTTP mode) on
127.1.0.81, and Redis DB 15 of the lab Redis, flushed before, between and
after (DB 0 is left alone). Workers are `python -m bot.cli worker` processes
with the default settings but for the lab's resolver, targets and CA.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import statistics
import sys
import tempfile
import time
from asyncio.subprocess import DEVNULL
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
from redis.asyncio import Redis
from slack_sdk.signature import SignatureVerifier

from bot.app import build_app, serve_http
from bot.poster import PACE_MS
from bot.queue import POST_QUEUE_NAME, CheckJob, _enqueue, make_queue
from bot.settings import Settings
from tests.lab.mail import running_lab
from tests.support.jobs import until_jobs
from tests.support.slackapi import SlackAPIStandIn

REDIS_URL = "redis://127.1.0.79:6379/15"
SLACK_ADDRESS, BOT_ADDRESS = "127.1.0.80", "127.1.0.81"
TOKEN, SECRET = "xoxb-test-bench-token", "bench-signing-secret"
LAB_DNS, ALLOW = "127.1.0.53", "127.1.0.0/16"
DOMAIN = "healthy.test"


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def fire(
    settings: Settings, slack: SlackAPIStandIn, n: int, tag: str
) -> tuple[list[float], int]:
    """n concurrent signed /mailcheck commands, one channel each: (ms each, acked Queued)."""
    url = f"http://{settings.http_host}:{settings.http_port}/slack/events"
    verifier = SignatureVerifier(SECRET)

    async def one(session: aiohttp.ClientSession, i: int) -> tuple[float, bool]:
        channel, reply_to = f"C0BENCH{tag}{i}", slack.response_url("bench")
        body = f"command=%2Fmailcheck&text={DOMAIN}&team_id=T1&user_id=U0BENCH&" + urlencode(
            {"channel_id": channel, "response_url": reply_to, "trigger_id": "1.2.3"}
        )
        ts = str(int(time.time()))
        headers = {
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": verifier.generate_signature(timestamp=ts, body=body) or "",
            "Content-Type": "application/x-www-form-urlencoded",
        }
        t0 = time.perf_counter()
        async with session.post(url, data=body, headers=headers) as resp:
            text = await resp.text()
        ms = (time.perf_counter() - t0) * 1000
        with contextlib.suppress(ValueError, AttributeError):
            text = json.loads(text).get("text", "")  # Bolt acks plain text or JSON
        return ms, resp.status == 200 and text.startswith("Queued")

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        results = await asyncio.gather(*(one(session, i) for i in range(n)))
    return [ms for ms, _ in results], sum(ok for _, ok in results)


async def ack_latency(
    settings: Settings, slack: SlackAPIStandIn, n: int
) -> list[tuple[list[float], int]]:
    redis = Redis.from_url(settings.redis_url)
    queue = make_queue(settings)
    runner = await serve_http(build_app(settings, queue, redis), settings)
    try:
        return [await fire(settings, slack, n, tag) for tag in ("A", "B")]
    finally:
        await runner.cleanup()
        await queue.disconnect()
        await redis.aclose()


def bench_env(slack_url: str, ca_file: str, anchors: str) -> dict[str, str]:
    """The settings, as the environment a worker process reads (the rest: defaults)."""
    return {
        "SLACK_BOT_TOKEN": TOKEN,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": slack_url,
        "MAILCHECK_SLACK_MODE": "http",
        "MAILCHECK_HTTP_HOST": BOT_ADDRESS,
        "MAILCHECK_HTTP_PORT": str(free_port(BOT_ADDRESS)),
        "MAILCHECK_REDIS_URL": REDIS_URL,
        "MAILCHECK_RESOLVER": LAB_DNS,
        "MAILCHECK_ALLOW_TARGETS": ALLOW,
        "MAILCHECK_CA_FILE": ca_file,
        "MAILCHECK_TRUST_ANCHORS": anchors,  # the lab's signed zones validate
        "MAILCHECK_USER_RATE": "0",  # no per-user or per-domain limit
        "MAILCHECK_DOMAIN_RATE": "0",
        "MAILCHECK_DNSBL_ZONES": "bl.test",  # the lab blocklist
    }


def usage(pid: int) -> tuple[float, float]:
    """(peak RSS MiB, CPU seconds) of a live process."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return hwm / 1024, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def start_workers(procs: list[Any], bench: dict[str, str], n: int, logs: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILCHECK_", "SLACK_"))}
    cmd = (sys.executable, "-m", "bot.cli", "worker")
    for i in range(n):
        with (logs / f"worker{i}.log").open("wb") as log:
            run = asyncio.create_subprocess_exec(*cmd, env=env | bench, stdout=DEVNULL, stderr=log)
            procs.append(await run)
    for i, proc in enumerate(procs):  # ready: saq logs "Worker starting" before startup()
        text = ""
        for _ in range(300):
            text = (logs / f"worker{i}.log").read_text(errors="replace")
            if "Worker starting" in text or proc.returncode is not None:
                break
            await asyncio.sleep(0.1)
        if proc.returncode is not None:
            raise RuntimeError(f"worker {i} exited: {text[-2000:]}")
    await asyncio.sleep(0.5)  # startup(): Redis, Slack client


async def throughput(
    env: dict[str, str], slack: SlackAPIStandIn, n: int, workers: int, channels: int
) -> dict[str, Any]:
    settings = Settings.from_env(env)
    redis, queue = Redis.from_url(settings.redis_url), make_queue(settings)
    procs: list[Any] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-bot-") as logs:
            await start_workers(procs, env, workers, Path(logs))
            jobs = [
                CheckJob(f"C0CHECK{i % channels}", "U0BENCH", DOMAIN, DOMAIN, request_id=f"r{i}")
                for i in range(n)
            ]
            cpu0 = [usage(p.pid)[1] for p in procs]
            t0 = time.monotonic()
            # Keys of their own: the same domain twice in a channel is one job otherwise.
            queued = [
                await _enqueue(queue, j, f"bench:{j.request_id}", 3600, settings) for j in jobs
            ]
            keys = [f"post:{j.request_id}" for j in jobs]  # each thread delivered
            await until_jobs(settings, keys, max(300, 30 * n), queue_name=POST_QUEUE_NAME)
            used = [usage(p.pid) for p in procs]
        done = await queue.jobs(f"bench:{j.request_id}" for j in jobs)
        reports = [
            json.loads(await redis.get(f"mailcheck:report:{j.request_id}") or "null") for j in jobs
        ]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()  # SIGTERM: an idle worker exits within a second
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await queue.disconnect()
        await redis.aclose()
    calls = [c for c in slack.calls if c.ok and _request_of(c) in {j.request_id for j in jobs}]
    uploads = [c for c in slack.calls if c.ok and c.method == "files.completeUploadExternal"]
    verdict = {  # request -> when its verdict was up (a parent with Re-run, or the edit)
        _request_of(c): c.at - t0
        for c in reversed(calls)
        if "mailcheck_rerun" in json.dumps(c.params.get("blocks"))
    }
    whole = {}
    for c in calls:
        whole[_request_of(c)] = c.at - t0
    return {
        "queued": sum(queued),
        "elapsed": max(whole.values()),
        "verdict": list(verdict.values()),
        "whole": list(whole.values()),
        "rss": [rss for rss, _ in used],
        "cpu": sum(cpu for _, cpu in used) - sum(cpu0),
        "report": [r["duration"] for r in reports],
        "job": [(j.duration("process") or 0) / 1000 for j in done if j and j.completed],
        "worst": sorted({r["worst"] for r in reports}),
        "calls": (len(calls) + len(uploads)) / n,
        "limited": sum(c.status == 429 for c in slack.calls),
    }


def _request_of(call: Any) -> str:
    """The request a thread's Slack write belongs to (its message metadata)."""
    meta = call.params.get("metadata")
    if isinstance(meta, str):
        meta = json.loads(meta)
    payload = meta.get("event_payload") if isinstance(meta, dict) else None
    return str(payload.get("request", "")) if isinstance(payload, dict) else ""


async def flush(url: str) -> None:
    redis = Redis.from_url(url)
    await redis.flushdb()
    await redis.aclose()


async def main_async(args: argparse.Namespace, ca_file: str, anchors: str) -> None:
    await flush(REDIS_URL)
    try:
        async with SlackAPIStandIn(address=SLACK_ADDRESS, token=TOKEN) as slack:
            env = bench_env(slack.url, ca_file, anchors)
            rounds = await ack_latency(Settings.from_env(env), slack, args.commands)
            await flush(REDIS_URL)  # drop the acked jobs: no worker should run them
            result = await throughput(env, slack, args.checks, args.workers, args.channels)
    finally:
        await flush(REDIS_URL)
    report(args, Settings.from_env(env), rounds, result)


def report(
    args: argparse.Namespace, settings: Settings, rounds: list[Any], r: dict[str, Any]
) -> None:
    print("Ack latency: one HTTP round trip of a signed /mailcheck slash command to the")
    print("  Bolt app (verify signature, parse, enqueue in Redis, ack); Slack wants < 3000 ms.")
    print(f"  {args.commands} concurrent commands, distinct channels, fresh connections each round")
    for name, (ms, acked) in zip(("cold", "warm"), rounds, strict=True):
        q = statistics.quantiles(ms, n=100, method="inclusive")
        print(
            f"  {name}: p50 {q[49]:7.1f} ms  p99 {q[98]:7.1f} ms  "
            f"max {max(ms):7.1f} ms  acked Queued {acked}/{len(ms)}"
        )
    print()
    print("Checks per minute per worker: full checks of healthy.test (every stage),")
    print(
        f"  {r['queued']} of them over {args.channels} channel(s), from the first enqueue to the "
        "last Slack call of the last thread."
    )
    print(
        f"  {args.workers} worker process(es), check concurrency {settings.worker_concurrency}, "
        f"posting concurrency {settings.post_concurrency}, grace {settings.slack_grace:g} s;\n"
        f"  resolver {LAB_DNS}, allow-target {ALLOW}, CA file {settings.ca_file}"
    )
    print(
        f"  all threads done in {r['elapsed']:.1f} s: "
        f"{r['queued'] / r['elapsed'] * 60 / args.workers:.1f} checks/minute/worker  "
        f"(worst: {r['worst']})"
    )
    med = {k: statistics.median(r[k]) for k in ("report", "job", "verdict", "whole")}
    print(
        f"  median check: {med['report']:.2f} s (the check itself); its job {med['job']:.2f} s "
        "(saq started -> completed: no Slack in it)"
    )
    print(
        f"  median from enqueue: verdict in Slack {med['verdict']:.2f} s, whole thread "
        f"{med['whole']:.2f} s (max {max(r['whole']):.2f} s)"
    )
    print(
        f"  Slack calls per check: {r['calls']:.1f} (paced {PACE_MS} ms apart per channel); "
        f"HTTP 429s: {r['limited']}"
    )
    print(
        "  peak RSS per worker: " + ", ".join(f"{mib:.1f} MiB" for mib in r["rss"]) + ";  "
        f"worker CPU {r['cpu'] / r['queued'] * 1000:.0f} ms per check"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commands", type=int, default=50, help="slash commands per round")
    parser.add_argument("--checks", type=int, default=20, help="checks for the throughput run")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument(
        "--channels", type=int, default=0, help="channels the checks share (default: one each)"
    )
    args = parser.parse_args()
    if args.commands < 2 or min(args.checks, args.workers) < 1 or args.channels < 0:
        parser.error("--commands must be at least 2, --checks and --workers at least 1")
    args.channels = args.channels or args.checks
    lab = running_lab()
    if lab is None:
        raise SystemExit("start the lab first: .venv/bin/python -m tests.lab up")
    logging.basicConfig(level=logging.WARNING)
    anchors = lab.state_dir.parent / "dns" / "trust-anchors"  # tests.lab.control.Lab
    asyncio.run(main_async(args, str(lab.ca_file), str(anchors)))


if __name__ == "__main__":
    main()
