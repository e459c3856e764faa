"""The delivery stage's reading of a delivered message's headers."""

from __future__ import annotations

import email
import email.policy

from checks.core.accounts import Account
from checks.stages.delivery import auth_results, hops, tagged_message

RAW = (
    b"Authentication-Results: mx.example.org;\r\n"
    b"\tspf=pass smtp.mailfrom=a.test;\r\n"
    b"\tdkim=pass header.d=a.test; dmarc=pass header.from=a.test\r\n"
    b"Received: from smtp.a.test by mx.example.org with ESMTPS id 1;\r\n"
    b"\tWed, 25 Nov 2026 18:00:02 +0000\r\n"
    b"Received: from client by smtp.a.test with ESMTPSA id 2;\r\n"
    b"\tWed, 25 Nov 2026 18:00:01 +0000\r\n"
    b"Subject: x\r\n\r\nbody\r\n"
)


def test_received_hops_newest_first_one_line_each() -> None:
    message = email.message_from_bytes(RAW, policy=email.policy.default)
    assert hops(message) == (
        "from smtp.a.test by mx.example.org with ESMTPS id 1; Wed, 25 Nov 2026 18:00:02 +0000",
        "from client by smtp.a.test with ESMTPSA id 2; Wed, 25 Nov 2026 18:00:01 +0000",
    )


def test_authentication_results_are_reported_as_sent() -> None:
    message = email.message_from_bytes(RAW, policy=email.policy.default)
    (verdicts,) = auth_results(message)
    assert verdicts.startswith("mx.example.org; spf=pass smtp.mailfrom=a.test;")
    assert "dmarc=pass header.from=a.test" in verdicts


def test_the_test_message_carries_its_tag_and_names_itself() -> None:
    account = Account(name="t", address="probe@a.test", password="long-enough-pw")
    message = tagged_message(account, "f" * 32, "mailcheck.invalid", "submission")
    assert message["X-Mailcheck-Tag"] == "f" * 32
    assert message["To"] == message["From"] == "probe@a.test"
    assert message["Message-ID"] == f"<{'f' * 32}@mailcheck.invalid>"
