"""The /mailcheck slash-command grammar (bot/grammar.py)."""

from __future__ import annotations

import dataclasses

import pytest

from bot.grammar import (
    MAX_TEXT,
    STAGE_ALIASES,
    USAGE,
    CheckCommand,
    DiffCommand,
    HelpCommand,
    HistoryCommand,
    SendTestCommand,
    UnwatchCommand,
    UsageError,
    WatchCommand,
    WatchesCommand,
    describe_every,
    parse,
)
from checks.core.model import CHECK_STAGES, Stage
from checks.core.names import DomainName, normalize_domain

D, C, T, P = Stage.DNS, Stage.CONNECT, Stage.TLS, Stage.POLICY


def check(text: str) -> CheckCommand:
    result = parse(text)
    assert isinstance(result, CheckCommand), result
    return result


def usage_error(text: str) -> str:
    result = parse(text)
    assert isinstance(result, UsageError), result
    assert result.message.endswith(USAGE)
    return result.message.removesuffix(USAGE)


# --- domains -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ascii_name", "unicode_name"),
    [
        ("example.com", "example.com", "example.com"),
        ("  Example.COM.  ", "example.com", "example.com"),
        ("user@example.org", "example.org", "example.org"),
        ("https://Mail.Example.net/owa/?a=b", "mail.example.net", "mail.example.net"),
        ("bücher.de", "xn--bcher-kva.de", "bücher.de"),
        ("xn--bcher-kva.de", "xn--bcher-kva.de", "bücher.de"),
        ("example.com\u00a0stage=tls", "example.com", "example.com"),  # no-break space
    ],
)
def test_domain_goes_through_normalize_domain(
    text: str, ascii_name: str, unicode_name: str
) -> None:
    assert check(text).domain == DomainName(ascii=ascii_name, unicode=unicode_name)


def test_a_bare_domain_checks_every_stage_without_account() -> None:
    assert parse("example.com") == CheckCommand(normalize_domain("example.com"), None, None)


# --- Slack's rewriting ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ascii_name"),
    [
        ("<http://example.com|example.com>", "example.com"),
        ("<http://example.com>", "example.com"),
        ("<https://mail.example.com/owa|mail.example.com/owa>", "mail.example.com"),
        ("<mailto:alice@example.org|alice@example.org>", "example.org"),
        ("<mailto:alice@example.org>", "example.org"),
        ("<mailto:alice@example.org|Alice Liddell>", "example.org"),  # label not a domain
        ("<http://example.net|click here>", "example.net"),
        ("<http://example.net|other.example>", "example.net"),  # label: a different domain
        ("<http://xn--bcher-kva.de|bücher.de>", "xn--bcher-kva.de"),
        ("<http://example.com|example.com> stage=tls", "example.com"),
        ("stage=tls <http://example.com|example.com>", "example.com"),
        ("<HTTP://EXAMPLE.COM:8080/x?y=z>", "example.com"),
    ],
)
def test_slack_links_are_unwrapped(text: str, ascii_name: str) -> None:
    assert check(text).domain.ascii == ascii_name


def test_the_label_is_kept_when_it_is_the_domain() -> None:
    # The label is what the user typed: an IDN keeps its Unicode form either way.
    assert check("<http://xn--bcher-kva.de|bücher.de>").domain.unicode == "bücher.de"


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("<@U024BE7LH>", "`@U024BE7LH` mentions a person"),
        ("<@U024BE7LH|bob> example.com", "`@bob` mentions a person"),
        ("<#C024BE7LR|general>", "`#general` mentions a channel"),
        ("<!channel>", "`@channel` mentions a group"),
        ("<!subteam^SAZ94GDB8|@ops>", "`@ops` mentions a group"),
    ],
)
def test_mentions_are_not_domains(text: str, complaint: str) -> None:
    assert complaint in usage_error(text)


def test_slack_entities_are_decoded_and_echoed_escaped() -> None:
    message = usage_error("exa&lt;mple&gt;.com")
    assert "exa&lt;mple&gt;.com" in message  # decoded for the check, escaped again here
    assert "<" not in message.split("\n")[0]


def test_user_input_in_a_message_cannot_ping_anyone() -> None:
    message = usage_error("example.com <!here|here>x <http://b.example|b.example>")
    assert "<!" not in message
    message = usage_error("example.com foo&lt;!channel&gt;=1")
    assert "<!channel>" not in message


# --- options -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "stages"),
    [
        ("example.com stage=tls", {T}),
        ("example.com stage=tls,connect", {T, C}),
        ("example.com stage=TLS,Connect", {T, C}),
        ("example.com stages=dns", {D}),
        ("example.com stage=dns,connect,tls,policy,auth,autoconfig,delivery", set(CHECK_STAGES)),
        # The send test is a command of its own, not a stage of a check.
        ("example.com stage=smtp", {C}),
        ("example.com stage=imap,pop3,submission", {C}),
        ("example.com stage=mx,ptr,srv", {D}),
        ("example.com stage=spf,dmarc,dkim,mta-sts,dane,dnsbl", {P}),
        ("example.com stage=cert", {T}),
        ("example.com stage=certificate,starttls", {T}),
        ("example.com stage=mx,cert", {D, T}),
        ("example.com stage=tls,", {T}),  # a stray comma is forgiven
        ("example.com stage=tls,tls", {T}),
        ("stage=tls example.com", {T}),
    ],
)
def test_stages(text: str, stages: set[Stage]) -> None:
    assert check(text).stages == frozenset(stages)


def test_every_alias_names_a_stage() -> None:
    for alias, stage in STAGE_ALIASES.items():
        assert check(f"example.com stage={alias}").stages == frozenset({stage})


@pytest.mark.parametrize(
    ("text", "account"),
    [
        ("example.com account=ops", "ops"),
        ("example.com account=Ops.Test_1-a", "Ops.Test_1-a"),
        ("example.com account=" + "a" * 32, "a" * 32),
        ("account=ops example.com", "ops"),
        ("example.com ACCOUNT=ops", "ops"),
    ],
)
def test_account(text: str, account: str) -> None:
    assert check(text).account == account


def test_selectors_and_sender_addresses() -> None:
    command = check("example.com selector=S1,mail.2024,s1 sender-ip=192.0.2.1,[2001:DB8::1]")
    assert command.dkim_selectors == ("s1", "mail.2024")
    assert command.sender_ips == ("192.0.2.1", "2001:db8::1")
    assert check("ip=198.51.100.7 example.com").sender_ips == ("198.51.100.7",)
    assert check("example.com").dkim_selectors == () == check("example.com").sender_ips


@pytest.mark.parametrize(
    "text",
    [
        "example.com stage=tls,connect account=ops",
        "example.com account=ops stage=tls,connect",
        "account=ops example.com stage=connect,tls",
        "stage=smtp,cert account=ops example.com",
    ],
)
def test_options_in_any_order(text: str) -> None:
    assert check(text) == CheckCommand(
        domain=normalize_domain("example.com"), stages=frozenset({T, C}), account="ops"
    )


# --- help ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["help", "HELP", " help ", "", "   ", "-h", "--help", "?", "\u2014help"]
)
def test_help(text: str) -> None:
    assert parse(text) == HelpCommand()


def test_usage_lists_the_forms_with_examples() -> None:
    for form in (
        "/mailcheck example.com`",
        "stage=tls,connect",
        "account=NAME",
        "/mailcheck history example.com`",
        "/mailcheck diff example.com`",
        "/mailcheck watch example.com every=6h`",
        "/mailcheck unwatch example.com`",
        "/mailcheck watches`",
        "/mailcheck help",
    ):
        assert form in USAGE
    for stage in CHECK_STAGES:
        assert f"`{stage.value}`" in USAGE
    assert "`sendtest`" not in USAGE
    for alias in STAGE_ALIASES:
        assert alias in USAGE


# --- errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "complaints"),
    [
        ("example.com foo=bar", ["Unknown option `foo=`", "`stage=`", "`account=`"]),
        ("example.com Stage2=tls", ["Unknown option `Stage2=`"]),
        ("example.com =tls", ["`=tls` has no option name"]),
        ("example.com --stage=tls", ["Unknown option `--stage`", "name=value"]),
        ("example.com --stage tls", ["Unknown option `--stage`"]),
        ("example.com -v", ["Unknown option `-v`"]),
        ("example.com stage=bar", ["Unknown stage `bar`", "Valid stages:", "`dns`", "`tls`"]),
        ("example.com stage=tls,bar,baz", ["Unknown stages `bar`, `baz`"]),
        ("example.com stage=smtp25", ["Unknown stage `smtp25`", "smtp"]),
        ("example.com stage=,", ["`stage=` has no stage in it"]),
        ("example.com stage=", ["`stage=` has no value"]),
        ("example.com account=", ["`account=` has no value"]),
        ("example.com stage= tls", ["`stage=` has no value"]),
        ("example.com stage=tls stage=dns", ["`stage=` is given twice"]),
        ("example.com stage=tls stages=dns", ["`stage=` is given twice"]),
        ("example.com account=a account=b", ["`account=` is given twice"]),
        ("example.com example.org", ["Two domains", "`example.com`", "`example.org`"]),
        ("example.com stage=tls example.org", ["Two domains"]),
        ("example.com account=bad/name", ["Bad account name `bad/name`", "1 to 32"]),
        ("example.com account=" + "a" * 33, ["Bad account name"]),
        ("example.com account=bé", ["Bad account name `bé`"]),
        ("example.com account=a@b", ["Bad account name `a@b`"]),
        ("example.com selector=bad!", ["DKIM selector 'bad!' is not a DNS label"]),
        ("example.com sender-ip=mail.example.com", ["sender IP 'mail.example.com' is not an IPv4"]),
        ("example.com sender-ip=,", ["`sender-ip=` takes 1 to 8 values"]),
        ("example.com selector=" + ",".join("s" * i for i in range(1, 10)), ["1 to 8 values"]),
        ("example.com selector=s1 dkim=s2", ["`selector=` is given twice"]),
        ("stage=tls", ["No domain given"]),
        ("account=ops", ["No domain given"]),
        ("localhost", ["'localhost' is a single label"]),
        ("192.0.2.1", ["IP address"]),
        ("example..com", ["empty label"]),
        ("under_score.example.com", ["not a valid domain"]),
        ("example.com/path", ["not a domain"]),
        ("help me", ["`help` goes alone"]),
        ("example.com --help", ["`--help` goes alone"]),
        ("x" * (MAX_TEXT + 1), [f"{MAX_TEXT + 1} characters", f"at most {MAX_TEXT}"]),
        ("example.com stage=" + "x" * 480, ["Unknown stage", "…"]),
    ],
)
def test_usage_errors_name_the_problem(text: str, complaints: list[str]) -> None:
    problem = usage_error(text)
    for complaint in complaints:
        assert complaint in problem, problem
    assert len(problem) < 700  # bounded, whatever was typed


def test_text_of_exactly_the_limit_is_parsed() -> None:
    text = "example.com" + " " * (MAX_TEXT - len("example.com"))
    assert check(text).domain.ascii == "example.com"


def test_backticks_in_input_cannot_break_the_code_span() -> None:
    problem = usage_error("example.com stage=a`b")
    assert "`a'b`" in problem


def test_commands_are_frozen() -> None:
    command = check("example.com")
    with pytest.raises(dataclasses.FrozenInstanceError):
        command.account = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        UsageError("x").message = "y"  # type: ignore[misc]


# --- history and diff ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("history example.com", HistoryCommand(normalize_domain("example.com"))),
        ("History Example.COM.", HistoryCommand(normalize_domain("example.com"))),
        ("  history   user@example.com ", HistoryCommand(normalize_domain("example.com"))),
        (
            "history <http://example.com|example.com>",
            HistoryCommand(normalize_domain("example.com")),
        ),
        ("history bücher.de", HistoryCommand(normalize_domain("xn--bcher-kva.de"))),
        ("diff example.com", DiffCommand(normalize_domain("example.com"))),
        ("DIFF <mailto:a@example.org|a@example.org>", DiffCommand(normalize_domain("example.org"))),
    ],
)
def test_history_and_diff(text: str, expected: object) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "complaints"),
    [
        ("history", ["No domain given", "`/mailcheck history example.com`"]),
        ("diff", ["No domain given", "`/mailcheck diff example.com`"]),
        ("history example.com example.org", ["Two domains", "`example.com`", "`example.org`"]),
        ("diff a.example b.example", ["Two domains", "`diff` takes one"]),
        ("history example.com stage=tls", ["Unknown option `stage=`", "no options"]),
        ("diff example.com account=ops", ["Unknown option `account=`"]),
        ("history example.com --all", ["Unknown option `--all`"]),
        ("history example.com --limit=3", ["Unknown option `--limit`"]),
        ("history =3 example.com", ["Unknown option `=3`"]),
        ("history localhost", ["'localhost' is a single label"]),
        ("history <@U024BE7LH>", ["mentions a person"]),
        ("history example.com help", ["`help` cannot follow `history`"]),
        ("history diff example.com", ["`diff` cannot follow `history`"]),
        ("example.com history", ["`history` goes first", "/mailcheck history example.com"]),
        ("example.com stage=tls diff", ["`diff` goes first"]),
        ("history exa&lt;mple&gt;.com", ["exa&lt;mple&gt;.com"]),
    ],
)
def test_history_and_diff_errors_name_the_problem(text: str, complaints: list[str]) -> None:
    problem = usage_error(text)
    for complaint in complaints:
        assert complaint in problem, problem
    assert "<" not in problem.replace("&lt;", "")
    assert len(problem) < 700


# --- watches ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("watch example.com", WatchCommand(normalize_domain("example.com"), 6 * 3600)),
        ("watch example.com every=6h", WatchCommand(normalize_domain("example.com"), 21600)),
        ("Watch every=30m Example.com.", WatchCommand(normalize_domain("example.com"), 1800)),
        ("watch example.com every=1d", WatchCommand(normalize_domain("example.com"), 86400)),
        ("watch example.com interval=2hours", WatchCommand(normalize_domain("example.com"), 7200)),
        ("watch example.com every=90s", WatchCommand(normalize_domain("example.com"), 90)),
        ("watch example.com every=7d", WatchCommand(normalize_domain("example.com"), 7 * 86400)),
        (
            "watch example.com every=12h stage=cert,dns",
            WatchCommand(normalize_domain("example.com"), 43200, frozenset({Stage.TLS, Stage.DNS})),
        ),
        (
            "unwatch <mailto:a@example.org|a@example.org>",
            UnwatchCommand(normalize_domain("example.org")),
        ),
        ("watches", WatchesCommand()),
        ("  WATCHES ", WatchesCommand()),
    ],
)
def test_watch_commands(text: str, expected: object) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "complaints"),
    [
        ("watch", ["No domain given", "`/mailcheck watch example.com`"]),
        ("watch example.com every=5x", ["Bad interval `5x`", "`every=6h`"]),
        ("watch example.com every=8d", ["at most 7 days", "`8d`"]),
        ("watch example.com every=0h", ["more than 0"]),
        ("watch example.com every=", ["`every=` has no value"]),
        ("watch example.com every=1h every=2h", ["`every=` is given twice"]),
        ("watch example.com account=ops", ["Unknown option `account=`", "`every=` and `stage=`"]),
        ("watch example.com stage=bogus", ["Unknown stage `bogus`"]),
        ("watch example.com example.org", ["Two domains", "`watch` takes one"]),
        ("unwatch example.com every=1h", ["Unknown option `every=`", "no options"]),
        ("unwatch", ["No domain given"]),
        ("watches example.com", ["`watches` takes no domain"]),
        ("watches --all", ["Unknown option `--all`"]),
        ("example.com watch", ["`watch` goes first"]),
        ("watch unwatch example.com", ["`unwatch` cannot follow `watch`"]),
    ],
)
def test_watch_errors_name_the_problem(text: str, complaints: list[str]) -> None:
    problem = usage_error(text)
    for complaint in complaints:
        assert complaint in problem, problem
    assert len(problem) < 1000


@pytest.mark.parametrize(
    ("seconds", "shown"), [(21600, "6h"), (1800, "30m"), (86400, "1d"), (90, "90s"), (5400, "90m")]
)
def test_describe_every(seconds: int, shown: str) -> None:
    assert describe_every(seconds) == shown


# --- send tests ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sendtest example.com", SendTestCommand(normalize_domain("example.com"))),
        (
            "SendTest alice@Example.com account=ops-test",
            SendTestCommand(normalize_domain("example.com"), "ops-test"),
        ),
        (
            "sendtest account=ops <http://example.org|example.org>",
            SendTestCommand(normalize_domain("example.org"), "ops"),
        ),
    ],
)
def test_sendtest_commands(text: str, expected: object) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "complaints"),
    [
        ("sendtest", ["No domain given", "`/mailcheck sendtest example.com`"]),
        ("sendtest example.com every=6h", ["Unknown option `every=`", "`account=`"]),
        ("sendtest example.com account=bad/name", ["Bad account name `bad/name`"]),
        ("sendtest a.example b.example", ["Two domains given"]),
        ("example.com stage=sendtest", ["Unknown stage `sendtest`"]),
    ],
)
def test_sendtest_errors_name_the_problem(text: str, complaints: list[str]) -> None:
    problem = usage_error(text)
    for complaint in complaints:
        assert complaint in problem, problem


# --- words that are not a domain --------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["not a domain!!", "check my server please", "history not a domain", "watch my mail server"],
)
def test_words_that_are_not_a_domain_are_not_called_two_domains(text: str) -> None:
    problem = usage_error(text)
    assert "Two domains" not in problem, problem
    words = text.removeprefix("history ").removeprefix("watch ")
    assert f"`{words}` is not a domain" in problem, problem
    assert "`example.com`" in problem


def test_two_real_domains_are_still_two_domains() -> None:
    for text in ("example.com example.org", "watch a.example b.example"):
        assert "Two domains given" in usage_error(text)


def test_words_beside_a_domain_are_neither_a_domain_nor_an_option() -> None:
    problem = usage_error("example.com stage=tls not here")
    assert "`not here` is neither a domain nor an option" in problem, problem
    assert "Two domains" not in problem and "`example.com not here`" not in problem
