"""The send test's judgement (checks/engine/sendtest.py): the pure rules, and judge_message()
on hand-made messages against a real little DNS server (tests/support/nanodns).

The messages never travel: a Received is built here as the receiver would
build it, so each case changes exactly one thing a sender can get wrong.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import format_datetime, formatdate
from pathlib import Path

import dkim
import jsonschema
import pytest

from checks.core.config import CPULimits, EngineConfig, Nameserver, Timeouts
from checks.core.model import Report, Severity
from checks.engine.sendtest import (
    Received,
    TLSInfo,
    aligned,
    date_problem,
    from_domain,
    helo_problem,
    judge_message,
    parse_headers,
    request_for,
    timed_out,
    token_address,
    token_of,
)
from checks.report import jsonreport
from tests.lab.dkim import signing_key
from tests.support.lagprobe import LagProbe
from tests.support.nanodns import NanoDNS, zone

PEER = "192.0.2.25"  # documentation addresses: only ever looked up in the stand-in DNS
OTHER = "192.0.2.99"


# -- pure rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("helo", "problem"),
    [
        ("mail.example.com", None),
        ("MAIL.Example.COM.", None),
        (f"[{PEER}]", None),
        ("", "no name given"),
        ("localhost", "not a fully qualified"),
        ("mail", "not a fully qualified"),
        ("localhost.localdomain", "local name"),
        ("box.local", "local name"),
        (PEER, "bare IP address"),
        (f"[{OTHER}]", "not the connecting address"),
        ("[not-an-address]", "not a valid address literal"),
        ("under_score.example.com", "not a valid host name"),
        ("-dash.example.com", "not a valid host name"),
        ("host.123", "numeric label"),
        ("a" * 64 + ".example.com", "not a valid host name"),
    ],
)
def test_helo_rules(helo: str, problem: str | None) -> None:
    found = helo_problem(helo, PEER)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_tokens_only_in_our_domain() -> None:
    address = token_address("abc123", "sendtest.example.net")
    assert address == "st-abc123@sendtest.example.net"
    assert token_of(address, "sendtest.example.net") == "abc123"
    assert token_of("<ST-ABC123@SendTest.Example.NET.>", "sendtest.example.net") == "abc123"
    assert token_of("st-abc123@elsewhere.example", "sendtest.example.net") is None
    assert token_of("postmaster@sendtest.example.net", "sendtest.example.net") is None
    assert token_of("st-@sendtest.example.net", "sendtest.example.net") is None
    assert token_of("no-at-sign", "sendtest.example.net") is None


def test_alignment_relaxed_and_strict() -> None:
    assert aligned("bounces.example.com", "example.com", "r")
    assert aligned("example.com", "news.example.com", "r")
    assert not aligned("bounces.example.com", "example.com", "s")
    assert aligned("Example.COM.", "example.com", "s")
    assert not aligned("example.net", "example.com", "r")
    # The public suffix list decides the organisation: two co.uk companies differ.
    assert not aligned("alpha.co.uk", "beta.co.uk", "r")


def test_date_rules() -> None:
    now = time.time()
    assert date_problem(formatdate(now), now) is None
    assert date_problem(None, now) == "no Date: header"
    assert "cannot be read" in str(date_problem("yesterday-ish", now))
    assert date_problem(formatdate(now, localtime=True), now) is None
    assert "in the future" in str(date_problem(formatdate(now + 3 * 3600), now))
    assert "old" in str(date_problem(formatdate(now - 3 * 86400), now))


@pytest.mark.parametrize(
    ("headers", "domain", "problem"),
    [
        ("From: Alice <alice@Example.COM>\n", "example.com", None),
        ("Subject: x\n", None, "no From: header"),
        ("From: a@example.com\nFrom: b@example.com\n", None, "2 From: headers"),
        ("From: a@example.com, b@example.org\n", None, "exactly one address"),
        ("From: undisclosed\n", None, "has no domain"),
    ],
)
def test_from_header_rules(headers: str, domain: str | None, problem: str | None) -> None:
    found, why = from_domain(parse_headers((headers + "\nbody\n").encode()))
    assert found == domain
    assert (why is None) if problem is None else (problem in str(why))


def test_received_survives_json() -> None:
    received = _received(b"From: a@example.com\r\n\r\nhi\r\n")
    assert Received.from_json(received.to_json()) == received
    plain = replace(received, tls=None, session=())
    assert Received.from_json(plain.to_json()) == plain


# -- judge_message() against a stand-in DNS -------------------------------------------------


@functools.cache
def _key(bits: int = 2048) -> tuple[bytes, str]:
    """(private key PEM, the DKIM TXT record data), one per size per run."""
    return signing_key(bits)


ZONE: dict[tuple[str, str], list[str]] = {
    ("example.com.", "TXT"): [f'"v=spf1 ip4:{PEER} -all"'],
    ("_dmarc.example.com.", "TXT"): ['"v=DMARC1; p=reject"'],
    ("mail.example.com.", "A"): [PEER],
    ("25.2.0.192.in-addr.arpa.", "PTR"): ["mail.example.com."],
    ("99.2.0.192.in-addr.arpa.", "PTR"): ["elsewhere.example.com."],
    ("elsewhere.example.com.", "A"): ["192.0.2.200"],
    ("soft.example.com.", "TXT"): ['"v=spf1 ip4:192.0.2.200 ~all"'],
    ("hard.example.com.", "TXT"): ['"v=spf1 ip4:192.0.2.200 -all"'],
    ("bounces.example.org.", "TXT"): [f'"v=spf1 ip4:{PEER} -all"'],
    ("lax.example.net.", "TXT"): [f'"v=spf1 ip4:{PEER} -all"'],
    ("_dmarc.lax.example.net.", "TXT"): ['"v=DMARC1; p=none"'],
    # The blocklist lists OTHER.
    ("99.2.0.192.bl.example.", "A"): ["127.0.0.2"],
}


@pytest.fixture
def config() -> Iterator[EngineConfig]:
    ZONE[("s1._domainkey.example.com.", "TXT")] = [_key()[1]]
    ZONE[("s1._domainkey.lax.example.net.", "TXT")] = [_key()[1]]
    with NanoDNS(zone(ZONE)) as server:
        yield EngineConfig(
            nameservers=(Nameserver(server.address, server.port),),
            timeouts=Timeouts(dns=2.0, check=20),
            dnsbl_zones=("bl.example",),
        )


def _message(
    author: str = "alice@example.com",
    *,
    sign: str | None = "example.com",
    date: str | None = "now",
    message_id: str | None = "<1@example.com>",
    extra: bytes = b"",
) -> bytes:
    headers = [f"From: Alice <{author}>", "To: st-abc@sendtest.example.net", "Subject: test"]
    if date == "now":
        headers.append(f"Date: {format_datetime(datetime.now(UTC))}")
    elif date is not None:
        headers.append(f"Date: {date}")
    if message_id is not None:
        headers.append(f"Message-ID: {message_id}")
    message = extra + ("\r\n".join(headers) + "\r\n\r\nHello from the send test.\r\n").encode()
    if sign is not None:
        signature = dkim.sign(
            message,
            b"s1",
            sign.encode(),
            _key()[0],
            include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
        )
        message = signature + message
    return message


def _received(message: bytes, **changes: object) -> Received:
    base = Received(
        token="abc",
        peer=PEER,
        helo="mail.example.com",
        esmtp=True,
        mail_from="bounce@example.com",
        recipients=("st-abc@sendtest.example.net",),
        tls=TLSInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256),
        received_at=time.time(),
        message=message,
        receiver="mx.sendtest.example.net",
        session=("> EHLO mail.example.com", "< 250-STARTTLS", "> MAIL FROM:<bounce@example.com>"),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


async def _judge(config: EngineConfig, received: Received, domain: str = "example.com") -> Report:
    report = await judge_message(received, request_for(domain), config)
    _valid(report)
    return report


def _valid(report: Report) -> None:
    jsonschema.validate(jsonreport.report_to_dict(report), jsonreport.schema())


def _codes(report: Report, at_least: Severity = Severity.INFO) -> set[str]:
    return {f.code for f in report.findings if f.severity >= at_least}


async def test_a_healthy_sender_passes_everything(config: EngineConfig) -> None:
    report = await _judge(config, _received(_message()))
    assert _codes(report) == set()
    (ok,) = [f for f in report.findings if f.code == "sendtest.ok"]
    for part in ("mail.example.com", "TLSv1.3", "SPF pass", "DKIM pass (d=example.com)", "DMARC"):
        assert part in ok.summary
    assert report.facts["sendtest.dmarc"] == {
        "from": "example.com",
        "spf_aligned": True,
        "dkim_aligned": True,
        "p": "reject",
    }
    assert report.transcripts["sendtest.summary"][0] == "> EHLO mail.example.com"


@pytest.mark.parametrize(
    ("changes", "message_args", "expect"),
    [
        ({"tls": None}, {}, {"sendtest.tls.none"}),
        ({"tls": TLSInfo("TLSv1", "AES128-SHA", 128)}, {}, {"sendtest.tls.old"}),
        ({"helo": "localhost"}, {}, {"sendtest.helo.invalid"}),
        ({"helo": "gone.example.com"}, {}, {"sendtest.helo.unresolvable"}),
        ({"helo": "elsewhere.example.com"}, {}, {"sendtest.helo.mismatch"}),
        # No PTR for the peer; SPF and DKIM still pass for example.com's MAIL FROM.
        (
            {"peer": "192.0.2.77"},
            {},
            {"sendtest.ptr.missing", "sendtest.spf.fail", "sendtest.helo.mismatch"},
        ),
        ({"mail_from": "x@soft.example.com"}, {}, {"sendtest.spf.softfail"}),
        ({"mail_from": "x@nospf.example.com"}, {}, {"sendtest.spf.none"}),
        (
            {"mail_from": "x@hard.example.com"},
            {"sign": None},
            {"sendtest.spf.fail", "sendtest.dkim.none", "sendtest.dmarc.fail"},
        ),
        ({}, {"sign": None}, {"sendtest.dkim.none"}),
        ({}, {"date": None}, {"sendtest.header.date"}),
        ({}, {"message_id": None}, {"sendtest.header.message_id"}),
        ({}, {"message_id": "no-brackets"}, {"sendtest.header.message_id"}),
        # Signed by (and sent as) another domain: DMARC passes there, but it is not ours.
        (
            {"mail_from": "x@lax.example.net"},
            {"author": "a@lax.example.net", "sign": "lax.example.net"},
            {"sendtest.domain.other"},
        ),
    ],
)
async def test_each_mistake_has_its_code(
    config: EngineConfig,
    changes: dict[str, object],
    message_args: dict[str, object],
    expect: set[str],
) -> None:
    report = await _judge(config, _received(_message(**message_args), **changes))  # type: ignore[arg-type]
    assert _codes(report) == expect


async def test_ptr_mismatch_and_blocklist(config: EngineConfig) -> None:
    report = await _judge(config, _received(_message(), peer=OTHER, helo=f"[{OTHER}]"))
    assert {"sendtest.ptr.mismatch", "sendtest.dnsbl.listed"} <= _codes(report)
    (mismatch,) = [f for f in report.findings if f.code == "sendtest.ptr.mismatch"]
    assert "elsewhere.example.com A -> 192.0.2.200" in mismatch.evidence


async def test_a_tampered_message_fails_dkim_with_the_reason(config: EngineConfig) -> None:
    signed = _message()
    tampered = signed.replace(b"Hello from", b"Hullo from")
    report = await _judge(config, _received(tampered))
    assert _codes(report, Severity.WARNING) == {"sendtest.dkim.fail"}
    (fail,) = [f for f in report.findings if f.code == "sendtest.dkim.fail"]
    assert "body hash mismatch" in fail.summary
    assert fail.target.host == "s1._domainkey.example.com"
    # DMARC still passes on aligned SPF.
    assert report.facts["sendtest.dmarc"]["spf_aligned"] is True


async def test_a_key_that_is_not_in_dns_fails(config: EngineConfig) -> None:
    message = _message(sign="example.com").replace(b"s=s1", b"s=gone")
    report = await _judge(config, _received(message))
    (fail,) = [f for f in report.findings if f.code == "sendtest.dkim.fail"]
    assert "gone._domainkey.example.com" in fail.target.label()


async def test_dmarc_p_none_failure_is_a_warning(config: EngineConfig) -> None:
    message = _message("a@lax.example.net", sign=None)
    report = await _judge(
        config, _received(message, mail_from="x@hard.example.com"), domain="lax.example.net"
    )
    (fail,) = [f for f in report.findings if f.code == "sendtest.dmarc.fail"]
    assert fail.severity is Severity.WARNING and "p=none" in fail.summary


async def test_a_valid_arc_chain_passes_and_a_broken_one_is_reported(config: EngineConfig) -> None:
    seal = (
        b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=example.com; s=s1; t=1700000000;\r\n b=AAAA\r\n"
    )
    report = await _judge(config, _received(_message(extra=seal)))
    assert "sendtest.arc.fail" in _codes(report)
    # A forwarder's seal over the message, made with dkimpy (as a list server would).
    forwarded = b"Authentication-Results: fwd.example.com; dkim=pass\r\n" + _message()
    sealed = b"".join(
        dkim.arc_sign(forwarded, b"s1", b"example.com", _key()[0], b"fwd.example.com")
    )
    report = await _judge(config, _received(sealed + forwarded))
    assert report.facts["sendtest.arc"] == "pass"
    assert _codes(report) == set()


async def test_hostile_header_text_is_bounded_and_made_visible(config: EngineConfig) -> None:
    author = "a@example.com"
    junk = "\x1b[31m" + "x" * 5000
    message = _message(author, message_id=f"{junk}").replace(b"Subject: test", b"Subject: hi")
    report = await _judge(config, _received(message, helo=junk))
    for finding in report.findings:
        assert "\x1b" not in finding.summary
        assert len(finding.summary) < 1200


def test_timeout_report() -> None:
    report = timed_out(request_for("example.com"), "st-abc@sendtest.example.net", 1800)
    (finding,) = report.findings
    assert finding.code == "sendtest.timeout" and finding.severity is Severity.ERROR
    assert "st-abc@sendtest.example.net within 30 min" in finding.summary
    _valid(report)


# -- CPU bounds: signatures verified per message, bytes hashed, a deadline ------------------
#
# A sender chooses how many signatures its message carries and how big its
# body is; each signature hashes the whole body. The verification must be
# capped, run off the event loop (a lag probe watches it) and end by a deadline.

MB = 1024 * 1024
SIGNED = [b"from", b"to", b"subject", b"date", b"message-id"]


def _signed_copies(body: bytes, copies: int, canonicalize: tuple[bytes, bytes]) -> bytes:
    """A message whose DKIM-Signature is repeated `copies` times: each copy
    verifies on its own (none signs the others), and each hashes the body."""
    headers = [
        "From: Alice <alice@example.com>",
        "To: st-abc@sendtest.example.net",
        "Subject: big",
        f"Date: {format_datetime(datetime.now(UTC))}",
        "Message-ID: <big@example.com>",
    ]
    message = ("\r\n".join(headers) + "\r\n\r\n").encode() + body
    signature = dkim.sign(
        message, b"s1", b"example.com", _key()[0], include_headers=SIGNED, canonicalize=canonicalize
    )
    return signature * copies + message


def _lines(size: int, line: bytes) -> bytes:
    return line * (size // len(line))


def _children() -> list[int]:
    """Our child processes still alive or unreaped, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == os.getpid():
            found.append(int(stat.parent.name))
    return found


def _dkim_facts(report: Report) -> tuple[list[dict[str, str]], dict[str, int]]:
    return report.facts["sendtest.dkim"], report.facts["sendtest.dkim.work"]


async def test_twenty_signatures_over_ten_megabytes_are_bounded(config: EngineConfig) -> None:
    body = _lines(10 * MB, b"The quick brown fox jumps over the lazy dog, again and again.\r\n")
    message = _signed_copies(body, 20, (b"relaxed", b"simple"))
    limits = CPULimits()
    async with LagProbe() as lag:
        report = await _judge(config, _received(message))
    assert lag.worst < 0.1, str(lag)
    results, work = _dkim_facts(report)
    verified = [r for r in results if r["result"] != "skipped"]
    assert verified and all(r["result"] == "pass" for r in verified)
    assert len(verified) <= limits.dkim_signatures and len(results) == 20
    assert work["body_bytes_hashed"] <= limits.dkim_hash_bytes
    (skipped,) = [f for f in report.findings if f.code == "sendtest.dkim.skipped"]
    assert f"{20 - len(verified)} of its 20 DKIM signatures" in skipped.summary
    assert "MB hashed per message" in skipped.summary
    assert "DKIM pass (d=example.com" in next(
        f.summary for f in report.findings if f.code == "sendtest.ok"
    )


async def test_many_signatures_on_a_small_message_are_capped(config: EngineConfig) -> None:
    message = _signed_copies(b"Hello.\r\n", 20, (b"relaxed", b"relaxed"))
    report = await _judge(config, _received(message))
    results, work = _dkim_facts(report)
    limits = CPULimits()
    assert [r["result"] for r in results] == ["pass"] * limits.dkim_signatures + ["skipped"] * (
        20 - limits.dkim_signatures
    )
    assert work["verified"] == limits.dkim_signatures
    (skipped,) = [f for f in report.findings if f.code == "sendtest.dkim.skipped"]
    assert "17 of its 20 DKIM signatures" in skipped.summary
    assert f"the first {limits.dkim_signatures}" in skipped.summary
    assert report.facts["sendtest.dmarc"]["dkim_aligned"] is True


async def test_a_verification_that_overruns_is_stopped_and_inconclusive(
    config: EngineConfig,
) -> None:
    # Lines of spaces make dkimpy's relaxed body canonicalisation (a regular
    # expression with backtracking) quadratic: seconds of CPU per megabyte, in
    # one C call that keeps the GIL, so no thread could be interrupted.
    message = _signed_copies(b"Hello.\r\n", 1, (b"relaxed", b"relaxed"))
    message = message.replace(b"Hello.\r\n", _lines(4 * MB, b" " * 998 + b"x\r\n"))
    bounded = replace(config, cpu=CPULimits(dkim_seconds=1.0))
    async with LagProbe() as lag:
        report = await _judge(bounded, _received(message))
    assert lag.worst < 0.1, str(lag)
    (skipped,) = [f for f in report.findings if f.code == "sendtest.dkim.skipped"]
    assert skipped.severity is Severity.INCONCLUSIVE
    assert "did not finish within 1 s" in skipped.summary
    assert [r["result"] for r in report.facts["sendtest.dkim"]] == ["skipped"]
    assert "sendtest.dkim.fail" not in _codes(report)
    assert _children() == []  # the child was ended, not left behind


async def test_dmarc_is_not_failed_on_signatures_left_unverified(config: EngineConfig) -> None:
    # SPF fails; the one DKIM signature (aligned) is over the bound, so DMARC
    # cannot be judged: no sendtest.dmarc.fail, and the skipped finding says why.
    none_verified = replace(config, cpu=CPULimits(dkim_signatures=0))
    report = await _judge(none_verified, _received(_message(), mail_from="x@hard.example.com"))
    assert _codes(report, Severity.WARNING) == {"sendtest.spf.fail"}
    assert {"sendtest.dkim.skipped"} <= _codes(report, Severity.INCONCLUSIVE)


def _arc_chain(message: bytes, hops: int) -> bytes:
    """`message` sealed by `hops` forwarders in turn, as list servers do."""
    for hop in range(hops):
        server = f"fwd{hop}.example.com".encode()
        verdict = b"arc=pass" if hop else b"dkim=pass"
        message = b"Authentication-Results: " + server + b"; " + verdict + b"\r\n" + message
        seal = dkim.arc_sign(message, b"s1", b"example.com", _key()[0], server)
        message = b"".join(seal) + message
    return message


async def test_an_arc_chain_longer_than_the_cap_is_not_verified(config: EngineConfig) -> None:
    limits = CPULimits()
    within = await _judge(config, _received(_arc_chain(_message(), 3)))
    assert within.facts["sendtest.arc"] == "pass"
    report = await _judge(config, _received(_arc_chain(_message(), limits.arc_sets + 4)))
    assert report.facts["sendtest.arc"] == "skipped"
    (skipped,) = [f for f in report.findings if f.code == "sendtest.dkim.skipped"]
    assert f"{limits.arc_sets + 4} ARC sets" in skipped.summary
    assert "sendtest.arc.fail" not in _codes(report)


async def test_a_malformed_signature_on_top_does_not_shift_the_verdicts(
    config: EngineConfig,
) -> None:
    """dkimpy counts every DKIM-Signature header; a first one without d= must
    not make mailcheck judge the second under the first's index."""
    message = b"DKIM-Signature: v=1; a=rsa-sha256; b=AAAA\r\n" + _message()
    report = await _judge(config, _received(message))
    verdicts, _ = _dkim_facts(report)
    by_domain = {(v["domain"], v["result"]) for v in verdicts}
    assert ("example.com", "pass") in by_domain, verdicts
    assert report.facts["sendtest.dmarc"]["dkim_aligned"] is True
