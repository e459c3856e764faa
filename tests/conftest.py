"""Shared fixtures. The lab (NSD on 127.1.0.53, Postfix, Dovecot, nginx) is
started by scripts/test; when pytest runs on its own, `lab` starts it here."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import pytest

from checks.core.config import EngineConfig, Nameserver, Timeouts
from checks.core.targets import TargetPolicy, parse_networks
from tests.lab.control import ROOT_MARKER, Lab, running_root
from tests.lab.zones import ISPDB_URL, NS_ADDRESS

REPO = Path(__file__).resolve().parents[1]
LAB_NETWORK = "127.1.0.0/16"


def _answers(address: str) -> bool:
    try:
        dns.query.udp(dns.message.make_query("healthy.test", "SOA"), address, timeout=0.5)
    except (dns.exception.Timeout, OSError):
        return False
    return True


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The running lab (DNS, mail, web), or one started here for this session."""
    if _answers(NS_ADDRESS):
        root = running_root()
        if root is None:
            pytest.fail(
                f"something answers DNS on {NS_ADDRESS} but no lab is noted in {ROOT_MARKER}: "
                "stop it (python -m tests.lab down) and try again"
            )
        yield Lab(root)
        return
    started = Lab(tmp_path_factory.mktemp("lab"))
    started.up(redis=False)
    try:
        yield started
    finally:
        started.down()


@pytest.fixture(scope="session")
def lab_dns(lab: Lab) -> str:
    """The address of the lab's authoritative DNS server."""
    return NS_ADDRESS


def lab_engine_config(address: str, lab: Lab | None = None, **timeouts: float) -> EngineConfig:
    """The engine pointed at the lab: its resolver, its network allowed, and
    (given the lab) its CA and DNSSEC trust anchor."""
    return EngineConfig(
        nameservers=(Nameserver(address),),
        policy=TargetPolicy(parse_networks([LAB_NETWORK])),
        timeouts=Timeouts(**{"dns": 2.0, "check": 30.0, **timeouts}),
        dnsbl_zones=("bl.test",),  # the lab's blocklist; public lists are not reachable
        ispdb_url=ISPDB_URL,  # the lab's stand-in for Thunderbird's ISPDB
        ca_file=str(lab.ca_file) if lab else None,
        trust_anchors=tuple(lab.trust_anchors.read_text().split("\n")[:-1]) if lab else None,
    )


@pytest.fixture
def lab_config(lab: Lab) -> EngineConfig:
    return lab_engine_config(NS_ADDRESS, lab)


@pytest.fixture(scope="session")
def mail_lab(lab: Lab) -> str:
    """The CA file of the running lab (Postfix/Dovecot and nginx certificates)."""
    return str(lab.ca_file)


@pytest.fixture(scope="session")
def lab_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The lab's real Redis (a RedisLab: .url, .restart()), started here if needed."""
    from tests.lab.redis import running_redis

    with running_redis(tmp_path_factory.mktemp("redis")) as redis_lab:
        yield redis_lab


@pytest.fixture
async def stalling_mx() -> Any:
    """smtp-stall.test's MX (127.1.20.3:25): accepts connections, never greets."""
    import asyncio

    from tests.support.fakeserver import FakeServer

    async def never_greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(3600)

    async with FakeServer(never_greet, "127.1.20.3", 25) as server:
        yield server


_WATCHDOG_OUT: list[Any] = []  # the real stderr, opened once


def _real_stderr(config: pytest.Config) -> Any:
    """A file on the terminal's stderr, past pytest's capture: a hang dump
    written to the captured one would vanish with the process."""
    if not _WATCHDOG_OUT:
        import os
        import sys

        capman = config.pluginmanager.getplugin("capturemanager")
        capturing = getattr(capman, "_global_capturing", None)
        saved = getattr(getattr(capturing, "err", None), "targetfd_save", None)
        if isinstance(saved, int):
            _WATCHDOG_OUT.append(os.fdopen(os.dup(saved), "w"))
        else:
            _WATCHDOG_OUT.append(sys.__stderr__)
    return _WATCHDOG_OUT[0]


@pytest.fixture(autouse=True)
def _hang_watchdog(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test stuck for 5 minutes (MAILCHECK_TEST_WATCHDOG seconds), in its body
    or its fixtures' teardown, dumps every asyncio task and thread stack and
    ends the run, so a hang shows where it is instead of eating CI's time limit.

    Its own timer thread, not faulthandler.dump_traceback_later: pytest's
    faulthandler plugin cancels that as soon as a test fails
    (pytest_exception_interact), and a failed test's teardown can hang too."""
    import os

    seconds = float(os.environ.get("MAILCHECK_TEST_WATCHDOG") or 300)
    out = _real_stderr(request.config)
    if os.environ.get("MAILCHECK_TEST_WATCHDOG_TRACE"):  # name each test as it starts
        print(f"\n[watchdog] {request.node.nodeid}", file=out, flush=True)
    timer = threading.Timer(seconds, _expire, (out, request.node.nodeid, seconds))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _expire(out: Any, test: str, seconds: float) -> None:
    import faulthandler
    import os

    print(f"\n[watchdog] {test} still running after {seconds:g} s", file=out, flush=True)
    _dump_tasks(out)
    faulthandler.dump_traceback(file=out, all_threads=True)
    print("[watchdog] ending the test run", file=out, flush=True)
    os._exit(70)


def _dump_tasks(out: Any) -> None:
    """Every asyncio task of every running loop, with where it waits: a hung
    async test idles in select(), so the thread stacks alone say little."""
    import asyncio
    import gc

    loops = [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop)]
    for loop in loops:
        if not loop.is_running():
            continue
        print(f"\n[watchdog] tasks of {loop!r}:", file=out)
        for task in list(asyncio.all_tasks(loop)):
            print(f"--- {task!r}", file=out)
            task.print_stack(limit=20, file=out)
    out.flush()
