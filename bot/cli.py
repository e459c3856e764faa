"""`mailcheck`: the engine in a terminal.

    mailcheck check example.com [--json] [--resolver IP[:PORT]]... [--allow-target CIDR]...
    mailcheck check a.example b.example [--file FILE|-] [--parallel N] [--json]
    mailcheck sendtest example.com [--account NAME] [--json]
    mailcheck codes [--markdown]
    mailcheck bot | worker | receiver

Exit status: 0 when no finding reaches the `--fail-on` level (default error),
1 when one does, 2 for a usage error (bad domain, unknown option or stage).
A batch (several domains, or --file) exits with its worst check's status and
runs nothing when one of its domains is a usage error (bot/batch.py).

Each command imports what it uses when it runs (issue 18: start-up within
150 ms): `--help` and `codes` stay clear of the engine, `check` of Redis, saq,
Slack and the send test's receiver, and of the probes (and their TLS, HTTP and
mail stacks) of stages it does not run, `check --json` of rich too;
tests/unit/test_startup.py holds them to it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from checks.core.errors import InputError
from checks.core.model import CHECK_STAGES, CheckRequest, Report, Severity, Stage

if TYPE_CHECKING:
    from rich.console import Console

    from bot.settings import Settings
    from bot.testaddresses import SendTest, SendTests

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2
# Checks of a batch at once: they wait on the network far more than on the
# CPU, and a process runs on one core whatever the machine has. The cap
# bounds the sockets (a check may hold a dozen at once) under a common
# 8192-descriptor limit.
PARALLEL, MAX_PARALLEL = 16, 500


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"mailcheck: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mailcheck", description="Diagnose a domain's mail setup.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    check = sub.add_parser(
        "check",
        help="check a domain, or several",
        description="Check a domain's mail setup. DOMAIN may also be an email address or a URL. "
        "Several domains (or --file) are checked in one batch: a line per domain in the "
        "order given, then a summary table; every option applies to each check.",
    )
    check.add_argument("domain", metavar="DOMAIN", nargs="*")
    check.add_argument(
        "--file",
        metavar="FILE",
        help="check the domains listed in FILE too, one per line ('-': stdin; "
        "blank lines and # comments skipped)",
    )
    check.add_argument(
        "--parallel",
        type=_parallel,
        metavar="N",
        help=f"checks of a batch run at once (default {PARALLEL}, at most {MAX_PARALLEL})",
    )
    check.add_argument(
        "--json", action="store_true", help="print the report as JSON (a batch: JSON Lines)"
    )
    check.add_argument(
        "--resolver",
        action="append",
        metavar="HOST[:PORT]",
        help="resolver to use (repeatable); default: MAILCHECK_RESOLVER or system",
    )
    check.add_argument(
        "--allow-target",
        action="append",
        metavar="CIDR",
        help="allow connecting to this non-public network (repeatable)",
    )
    check.add_argument("--ca-file", metavar="PEM", help="extra trusted CA certificates")
    check.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="overall deadline of the check (default 120)",
    )
    check.add_argument(
        "--stage",
        action="append",
        metavar="NAME",
        choices=[s.value for s in CHECK_STAGES],
        help="run only this stage (repeatable): " + ", ".join(s.value for s in CHECK_STAGES),
    )
    check.add_argument(
        "--dkim-selector",
        action="append",
        metavar="NAME",
        default=[],
        help="your DKIM selector (repeatable), tried before the common ones",
    )
    check.add_argument(
        "--sender-ip",
        action="append",
        metavar="ADDRESS",
        default=[],
        help="an address your mail is sent from (repeatable): is it permitted by SPF?",
    )
    check.add_argument(
        "--account",
        metavar="NAME",
        help="log in and send a round-trip message with this test account "
        "(defined server-side: MAILCHECK_ACCOUNTS_FILE)",
    )
    check.add_argument(
        "--mobileconfig",
        metavar="URL",
        help="an Apple configuration profile to validate and test (https URL)",
    )
    check.add_argument(
        "--trust-anchor",
        metavar="FILE",
        help="DNSSEC trust anchors (DS or DNSKEY records) instead of the IANA root's",
    )
    check.add_argument(
        "--compare-last",
        action="store_true",
        help="keep the report in MAILCHECK_REDIS_URL's history and show what changed "
        "since the last CLI check of the domain",
    )
    check.add_argument(
        "--fail-on",
        choices=["error", "warning", "inconclusive"],
        default="error",
        help="lowest severity that makes the exit status 1 (default error)",
    )
    check.add_argument(
        "-v", "--verbose", action="store_true", help="explain every finding and show all evidence"
    )

    sendtest = sub.add_parser(
        "sendtest",
        help="receive a message from a domain's mail server and judge it",
        description="Hand out a test address at MAILCHECK_SENDTEST_DOMAIN (served by "
        "`mailcheck receiver`, sharing MAILCHECK_REDIS_URL), wait for a message from "
        "DOMAIN's server and judge it: reverse DNS, HELO, TLS, SPF, DKIM, DMARC, headers, "
        "blocklists. With --account the message is submitted with that test account.",
    )
    sendtest.add_argument("domain", metavar="DOMAIN")
    sendtest.add_argument("--json", action="store_true", help="print the verdict as JSON")
    sendtest.add_argument("--resolver", action="append", metavar="HOST[:PORT]")
    sendtest.add_argument("--allow-target", action="append", metavar="CIDR")
    sendtest.add_argument("--ca-file", metavar="PEM", help="extra trusted CA certificates")
    sendtest.add_argument(
        "--account", metavar="NAME", help="submit the test message with this test account"
    )
    sendtest.add_argument(
        "--wait",
        type=float,
        metavar="SECONDS",
        help="how long the address takes its message (default MAILCHECK_SENDTEST_TTL)",
    )
    sendtest.add_argument(
        "--fail-on",
        choices=["error", "warning", "inconclusive"],
        default="error",
        help="lowest severity that makes the exit status 1 (default error)",
    )
    sendtest.add_argument("-v", "--verbose", action="store_true", help="explain every finding")

    sub.add_parser("bot", help="run the Slack front end (settings from the environment)")
    sub.add_parser("worker", help="run a worker that executes queued checks")
    sub.add_parser(
        "receiver",
        help="run the SMTP receiver of send tests (MAILCHECK_SENDTEST_DOMAIN's MX)",
    )

    history = sub.add_parser(
        "history",
        help="the last checks of a domain kept in MAILCHECK_REDIS_URL",
        description="The last checks of DOMAIN in the store at MAILCHECK_REDIS_URL: those "
        "run with --compare-last (channel 'cli'), or a Slack channel's with --channel.",
    )
    history.add_argument("domain", metavar="DOMAIN")
    history.add_argument("--channel", default=CLI_CHANNEL, help="a Slack channel ID (C...)")
    history.add_argument("--limit", type=int, default=10, help="how many runs (default 10)")

    codes = sub.add_parser("codes", help="list every finding code")
    codes.add_argument("--markdown", action="store_true", help="print docs/findings.md")
    return parser


def _parallel(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_PARALLEL:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_PARALLEL}")
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "check" and not any(x.startswith("-") for x in extra):
        args.domain += extra  # `check a.example --stage dns b.example`
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "check" and not args.domain and args.file is None:
        parser.error("the following arguments are required: DOMAIN (or --file FILE)")
    try:
        if args.command == "codes":
            return _codes(args.markdown)
        if args.command in ("bot", "worker", "receiver"):
            return _serve(args.command)
        if args.command == "sendtest":
            return _sendtest(args)
        if args.command == "history":
            import asyncio

            return asyncio.run(_history(args))
        return _check(args)
    except InputError as exc:
        print(f"mailcheck: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `mailcheck codes | head`: the reader left; not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return EXIT_OK


def _codes(markdown: bool) -> int:
    from checks.core import catalog

    if markdown:
        print(catalog.markdown())
        return EXIT_OK
    for e in catalog.CATALOG.values():
        print(f"{e.code:32} {e.severity.value:13} {e.title}")
    return EXIT_OK


def _serve(what: str) -> int:
    import asyncio
    import logging

    from bot.app import run_bot
    from bot.receiver import run_receiver
    from bot.settings import Settings
    from bot.worker import run_worker

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = Settings.from_env()
    redact_logs(settings)
    with contextlib.suppress(KeyboardInterrupt):
        runs = {"bot": run_bot, "worker": run_worker, "receiver": run_receiver}
        asyncio.run(runs[what](settings))
    return EXIT_OK


def _load_trust(ca_file: str | None) -> None:
    """Read the system's CA bundle (and the operator's) for the check's TLS
    and HTTPS, beside the imports and the first lookups: OpenSSL parses it
    without the GIL, some 30 ms a check would otherwise wait out."""
    from checks.net import http
    from checks.rules import tls

    http.ssl_context(ca_file)
    tls.trust_store(ca_file)


def _check(args: argparse.Namespace) -> int:
    import asyncio
    import atexit
    import gc
    import logging
    import threading

    from bot.settings import Settings, parse_resolvers

    # The process ends with its checks, and the interpreter's collections at
    # exit would walk every object the engine made (some 20 ms of a one-domain
    # check's 150) to free memory the OS takes back anyway: they skip frozen ones.
    atexit.register(gc.freeze)
    settings = Settings.from_env().override(
        resolvers=parse_resolvers(args.resolver) if args.resolver else None,
        allow_targets=tuple(args.allow_target) if args.allow_target else None,
        ca_file=args.ca_file,
        timeout=args.timeout,
        trust_anchor_file=args.trust_anchor,
    )
    requests = _requests(args, settings)
    if any(r.stages is None or r.stages - {Stage.DNS} for r in requests):
        threading.Thread(target=_load_trust, args=(settings.ca_file,), daemon=True).start()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    redact_logs(settings)
    resolver = ", ".join(str(n) for n in settings.resolvers) or "system resolver"
    fail_on = Severity(args.fail_on)
    if args.file is not None or len(requests) > 1:
        from bot.batch import run_batch

        async def keep(report: Report) -> str:
            return await _keep_and_compare(settings, report)

        failed = asyncio.run(
            run_batch(
                requests,
                settings.engine_config(),
                parallel=args.parallel or PARALLEL,
                fail_on=fail_on,
                json_lines=args.json,
                verbose=args.verbose,
                resolver=resolver,
                keep=keep if args.compare_last else None,
            )
        )
        return EXIT_PROBLEMS if failed else EXIT_OK

    if args.json:  # rich and the terminal renderer are for people, not for --json
        report = asyncio.run(_run(requests[0], settings, None))
    else:
        from rich.console import Console

        err = Console(stderr=True)
        report = asyncio.run(_run(requests[0], settings, err if err.is_terminal else None))
    changes = asyncio.run(_keep_and_compare(settings, report)) if args.compare_last else None
    if args.json:
        from checks.report import jsonreport

        sys.stdout.write(jsonreport.dumps(report) + "\n")
    else:
        from bot import terminal

        terminal.print_report(Console(), report, resolver=resolver, verbose=args.verbose)
    if changes is not None:
        print(changes, file=sys.stderr if args.json else sys.stdout)
    return EXIT_PROBLEMS if report.at_least(fail_on) else EXIT_OK


def _requests(args: argparse.Namespace, settings: Settings) -> list[CheckRequest]:
    """A request per DOMAIN, then per line of --file, in that order; InputError
    (naming the file's line) for the first that cannot be checked."""
    from checks.core.names import normalize_domain, normalize_selector, normalize_sender_ip

    given: list[tuple[str, str | None]] = [(d, None) for d in args.domain]
    if args.file is not None:
        from bot.batch import read_domains

        given += read_domains(args.file)
    stages = frozenset(Stage(s) for s in args.stage) if args.stage else None
    selectors = tuple(normalize_selector(s) for s in args.dkim_selector)
    sender_ips = tuple(normalize_sender_ip(a) for a in args.sender_ip)
    mobileconfig = _url(args.mobileconfig) if args.mobileconfig else None
    requests = []
    for text, where in given:
        try:
            name = normalize_domain(text)
            account = (
                settings.accounts.for_domain(args.account, name.ascii).name
                if args.account
                else None
            )
        except InputError as exc:
            if where is None:
                raise
            raise InputError(f"{where}: {exc}") from None
        requests.append(
            CheckRequest(
                domain=name.ascii,
                display=name.unicode,
                original=text,
                stages=stages,
                dkim_selectors=selectors,
                sender_ips=sender_ips,
                mobileconfig_url=mobileconfig,
                account=account,
            )
        )
    return requests


def _sendtest(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from rich.console import Console

    from bot import terminal
    from bot.settings import Settings, parse_resolvers
    from checks.core.names import normalize_domain
    from checks.report import jsonreport

    settings = Settings.from_env().override(
        resolvers=parse_resolvers(args.resolver) if args.resolver else None,
        allow_targets=tuple(args.allow_target) if args.allow_target else None,
        ca_file=args.ca_file,
        sendtest_ttl=int(args.wait) if args.wait else None,
    )
    settings.require_sendtest()
    name = normalize_domain(args.domain)
    account = settings.accounts.for_domain(args.account, name.ascii).name if args.account else None
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    redact_logs(settings)
    err = Console(stderr=True, highlight=False)
    report = asyncio.run(_wait_and_judge(settings, name.ascii, name.unicode, account, err))
    resolver = ", ".join(str(n) for n in settings.resolvers) or "system resolver"
    if args.json:
        sys.stdout.write(jsonreport.dumps(report) + "\n")
    else:
        terminal.print_report(Console(), report, resolver=resolver, verbose=args.verbose)
    return EXIT_PROBLEMS if report.at_least(Severity(args.fail_on)) else EXIT_OK


async def _wait_and_judge(
    settings: Settings, domain: str, display: str, account: str | None, err: Console
) -> Report:
    """One send test from a terminal: the address, the wait, the verdict."""
    from redis.exceptions import RedisError

    from bot.queue import redis_client
    from bot.testaddresses import SendTests
    from checks.engine import sendtest

    request = sendtest.request_for(domain, display, account)
    redis = redis_client(_store_url(settings))
    tests = SendTests(redis, settings.require_sendtest(), settings.sendtest_ttl)
    try:
        test = await tests.create(domain, display, account=account)
        try:
            return await _one_test(settings, request, tests, test, err)
        finally:
            with contextlib.suppress(RedisError):
                await tests.finish(test.token)
    except RedisError as exc:
        raise InputError(f"the send-test store at MAILCHECK_REDIS_URL: {exc}") from None
    finally:
        await redis.aclose()


async def _one_test(
    settings: Settings, request: CheckRequest, tests: SendTests, test: SendTest, err: Console
) -> Report:
    from bot import terminal
    from checks.engine import sendtest

    config = settings.engine_config()
    until = time.strftime("%H:%M:%S", time.localtime(test.expires_at))
    err.print(
        f"Send a message from {request.display}'s mail server to\n\n    {test.address}\n\n"
        f"(waiting until {until}, {settings.sendtest_ttl / 60:.0f} min; Ctrl-C stops)"
    )
    if request.account is not None:
        sent = await sendtest.submit(request, config, test.address, test.token)
        for finding in sent.findings:
            if finding.code.startswith("sendtest.submit"):
                err.print(f"{finding.code}: {terminal.clean(finding.summary)}")
        if not any(f.code == "sendtest.submitted" for f in sent.findings):
            return sent
    received = await tests.wait(test.token, test.left())
    if received is None and await tests.time_out(test.token):
        return sendtest.timed_out(request, test.address, settings.sendtest_ttl)
    received = received or await tests.message(test.token)
    if received is None:  # pragma: no cover - the outcome says a message came
        raise InputError(f"the message for {test.address} was lost from the store")
    return await sendtest.judge_message(received, request, config)


CLI_CHANNEL = "cli"  # the history "channel" of checks run from a terminal


def _store_url(settings: Settings) -> str:
    """The bot's Redis, only when the operator named it: the CLI keeps no history
    in a Redis that merely answers at the default address."""
    if "MAILCHECK_REDIS_URL" not in settings.given or not settings.redis_url:
        raise InputError("history needs MAILCHECK_REDIS_URL (the bot's Redis) to be set")
    return settings.redis_url


async def _keep_and_compare(settings: Settings, report: Report) -> str:
    """Keep the report in the history (channel 'cli'); what changed since the last one."""
    import getpass
    import json
    import uuid

    from redis.exceptions import RedisError

    from bot.history import HistoryStore
    from bot.queue import redis_client
    from checks.report import jsonreport
    from checks.report.diff import diff_reports

    redis = redis_client(_store_url(settings))
    try:
        store = HistoryStore(redis, settings.retention_days)
        request_id = uuid.uuid4().hex
        text = jsonreport.dumps(report)
        await store.keep(text, request_id=request_id, channel=CLI_CHANNEL, user=getpass.getuser())
        previous = await store.previous(CLI_CHANNEL, report.request.domain, request_id)
        before = await store.report(previous.request_id) if previous else None
    except RedisError as exc:
        raise InputError(f"the history store at MAILCHECK_REDIS_URL: {exc}") from None
    finally:
        await redis.aclose()
    if previous is None or before is None:
        return f"First check of {report.request.display} kept in the history."
    diff = diff_reports(before, json.loads(text))
    when = previous.started_at[:19].replace("T", " ")
    if diff.empty:
        return f"No changes since the check of {when} UTC."
    return f"Changes since the check of {when} UTC:\n" + "\n".join(
        f"  {line}" for line in diff.lines()
    )


async def _history(args: argparse.Namespace) -> int:
    from redis.exceptions import RedisError

    from bot.history import HistoryStore
    from bot.queue import redis_client
    from bot.settings import Settings
    from checks.core.names import normalize_domain

    settings = Settings.from_env()
    name = normalize_domain(args.domain)
    redis = redis_client(_store_url(settings))
    try:
        runs = await HistoryStore(redis, settings.retention_days).runs(
            args.channel, name.ascii, limit=max(1, args.limit)
        )
    except RedisError as exc:
        raise InputError(f"the history store at MAILCHECK_REDIS_URL: {exc}") from None
    finally:
        await redis.aclose()
    if not runs:
        print(f"No checks of {name.unicode} in {args.channel}'s history.")
        return EXIT_OK
    for run in runs:
        counts = ", ".join(f"{n} {s}" for s, n in run.counts.items() if n and s != "ok")
        when = run.started_at[:19].replace("T", " ")
        print(f"{when} UTC  {run.worst:13} {counts or 'no problems'}  ({run.user})")
    return EXIT_OK


def redact_logs(settings: Settings) -> None:
    """Every log handler drops the test accounts' secrets (and their base64 forms)."""
    import logging

    log_filter = settings.accounts.secrets().log_filter()
    for handler in logging.getLogger().handlers:
        handler.addFilter(log_filter)


def _url(text: str) -> str:
    parts = urlsplit(text.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InputError(f"--mobileconfig {text!r} is not an http(s) URL")
    return text.strip()


async def _run(request: CheckRequest, settings: Settings, console: Console | None) -> Report:
    from checks.engine.runner import CheckDone, ProbeFinished, ProbeStarted, stream

    running: list[str] = []
    status = console.status(f"Checking {request.display}…") if console else None
    if status:
        status.start()
    try:
        async for event in stream(request, settings.engine_config()):
            if isinstance(event, ProbeStarted):
                running.append(event.probe)
            elif isinstance(event, ProbeFinished):
                if event.timing.probe in running:
                    running.remove(event.timing.probe)
                if console:
                    from bot import terminal

                    worst = max((f.severity for f in event.findings), default=Severity.OK)
                    mark, style = terminal.MARKS[worst]
                    console.print(
                        f"[{style}]{mark}[/] {event.timing.probe} "
                        f"[dim]{event.timing.duration * 1000:.0f} ms[/]",
                        highlight=False,
                    )
            elif isinstance(event, CheckDone):
                return event.report
            if status:
                status.update(f"Checking {request.display}… {', '.join(running)}")
    finally:
        if status:
            status.stop()
    raise RuntimeError("check ended without a report")  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
