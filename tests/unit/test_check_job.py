"""A check job's Re-run value: written by the worker into the button, read
back by the listener from whatever Slack (or a forger) sends."""

from __future__ import annotations

import json

import pytest

from bot.queue import CheckJob
from checks.core.errors import InputError

JOB = CheckJob(
    channel="C1",
    user="U1",
    domain="xn--bcher-kva.example",
    display="bücher.example",
    stages=("policy", "tls"),
    account="alice",
    dkim_selectors=("mail",),
    sender_ips=("192.0.2.7",),
    request_id="r1",
)


def test_the_value_names_what_to_check_in_words_and_reads_back() -> None:
    value = JOB.rerun_value()
    assert json.loads(value) == {
        "domain": "xn--bcher-kva.example",
        "stages": ["policy", "tls"],
        "account": "alice",
        "dkim_selectors": ["mail"],
        "sender_ips": ["192.0.2.7"],
    }
    again = CheckJob.from_rerun(value, "C2", "U2")  # where and who: the click's
    assert again == CheckJob(
        channel="C2",
        user="U2",
        domain=JOB.domain,
        display="bücher.example",
        stages=JOB.stages,
        account="alice",
        dkim_selectors=("mail",),
        sender_ips=("192.0.2.7",),
    )


def test_a_button_posted_before_the_keys_were_spelt_out_still_works() -> None:
    old = '{"d":"example.com","s":null,"a":null,"k":["s1"],"i":["192.0.2.9"]}'
    job = CheckJob.from_rerun(old, "C1", "U1")
    assert (job.domain, job.stages, job.account) == ("example.com", None, None)
    assert (job.dkim_selectors, job.sender_ips) == (("s1",), ("192.0.2.9",))


@pytest.mark.parametrize(
    "value",
    [
        "not json",
        "[1, 2]",
        '{"stages": ["dns"]}',  # no domain
        '{"domain": "exa mple.com"}',
        '{"domain": "example.com", "stages": ["frob"]}',
        '{"domain": "example.com", "dkim_selectors": ["a b"]}',
        '{"domain": "example.com", "sender_ips": ["not-an-ip"]}',
    ],
)
def test_a_forged_or_broken_value_is_refused(value: str) -> None:
    with pytest.raises((ValueError, TypeError, KeyError, InputError)):
        CheckJob.from_rerun(value, "C1", "U1")
