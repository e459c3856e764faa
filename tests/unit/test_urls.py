"""URL hosts read the way a browser reads them (checks.core.urls): every spelling of
one address becomes that address, so the target policy sees what a client
would reach."""

from __future__ import annotations

import re

import pytest

from checks.core.errors import ProtocolViolation
from checks.core.urls import parse_http_url


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11/x", "127.0.0.1"),
        ("https://127.1/x", "127.0.0.1"),
        ("https://127.0.1/x", "127.0.0.1"),
        ("https://2130706433/x", "127.0.0.1"),
        ("https://0x7f000001/x", "127.0.0.1"),
        ("https://0x7f.0.0.1/x", "127.0.0.1"),
        ("https://0177.0.0.1/x", "127.0.0.1"),
        ("https://017700000001/x", "127.0.0.1"),
        ("https://127.0.0.1./x", "127.0.0.1"),
        ("https://%31%32%37.0.0.1/x", "127.0.0.1"),
        ("https://[::ffff:127.0.0.1]/x", "::ffff:7f00:1"),
        ("https://[::FFFF:7F00:1]:8443/x", "::ffff:7f00:1"),
        ("https://169.254.169.254/latest/meta-data", "169.254.169.254"),
        ("https://0xA9.0xFE.0xA9.0xFE/", "169.254.169.254"),
        ("https://Autoconfig.Example.COM./mail", "autoconfig.example.com"),
        ("https://\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25\u3002com/", "example.com"),
        ("https://b\u00fccher.de/", "xn--bcher-kva.de"),
        ("https://xn--bcher-kva.de/", "xn--bcher-kva.de"),
    ],
)
def test_every_spelling_of_a_host_becomes_one(url: str, host: str) -> None:
    parsed = parse_http_url(url)
    assert parsed.host == host
    assert parsed.literal == (host[0].isdigit() or ":" in host)


def test_port_target_and_authority() -> None:
    parsed = parse_http_url("HTTPS://[::1]:8443/a b/c?q=1 2#frag")
    assert (parsed.scheme, parsed.port, parsed.target) == ("https", 8443, "/a%20b/c?q=1%202")
    assert parsed.authority == "[::1]:8443"
    assert str(parse_http_url("http://example.com:80")) == "http://example.com/"


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("ftp://example.com/", "not an http(s) URL"),
        ("https:///path", "not an http(s) URL"),
        ("https://user:pw@example.com/", "credentials"),
        ("https://[fe80::1%25eth0]/", "zone"),
        ("https://[not:an:address]/", "not a valid URL"),
        ("https://1.2.3.4.5/", "not a host name or an IPv4 address"),
        ("https://256.0.0.1/", "too large"),
        ("https://127.0.0.0x100/", "too large"),
        ("https://example.123/", "not a host name or an IPv4 address"),
        ("https://exa mple.com/", "not a host name"),
        ("https://example.com:99999/", "not a valid URL"),
        ("https://%ff%fe.example/", "not a host name"),
    ],
)
def test_unusable_urls_are_named(url: str, complaint: str) -> None:
    with pytest.raises(ProtocolViolation, match=re.escape(complaint)):
        parse_http_url(url)
