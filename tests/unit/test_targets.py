import pytest

from checks.core.errors import InputError, TargetRefused
from checks.core.targets import TargetPolicy, parse_address, parse_networks, special_purpose

DEFAULT = TargetPolicy()


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("10.1.2.3", "private"),
        ("100.64.0.1", "shared"),
        ("100.127.255.254", "shared"),
        ("127.0.0.1", "loopback"),
        ("127.1.0.53", "loopback"),
        ("169.254.169.254", "link-local"),  # cloud metadata: the classic SSRF target
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.0.0.8", "IETF"),
        ("192.0.2.1", "documentation"),
        ("192.168.1.1", "private"),
        ("198.18.0.1", "benchmarking"),
        ("198.51.100.7", "documentation"),
        ("203.0.113.9", "documentation"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "broadcast"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("::ffff:10.0.0.1", "private"),  # v4-mapped: judged by the embedded address
        ("::ffff:127.0.0.1", "loopback"),
        ("::10.0.0.1", "private"),  # IPv4-compatible: judged by the embedded address
        ("::ffff:0:7f00:1", "loopback"),  # SIIT (IPv4-translated) 127.0.0.1
        ("::ffff:0:a9fe:a9fe", "link-local"),  # SIIT of the cloud metadata address
        ("::ffff:0:a00:1", "private"),
        ("64:ff9b:1::a00:1", "local-use NAT64"),  # where the IPv4 sits is the operator's choice
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("2002:c0a8:101::1", "private"),  # 6to4 of 192.168.1.1
        ("2001:db8::1", "documentation"),
        ("3fff::1", "documentation"),
        ("fc00::1", "unique-local"),
        ("fd12:3456::1", "unique-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("100::1", "discard"),
        ("2001:2::1", "IETF"),
    ],
)
def test_non_public_addresses_are_refused_by_default(address: str, kind: str) -> None:
    reason = DEFAULT.refusal(address)
    assert reason is not None and kind in reason
    with pytest.raises(TargetRefused) as info:
        DEFAULT.check(address)
    assert "--allow-target" in str(info.value)


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "100.63.255.255",  # just below 100.64/10
        "100.128.0.0",  # just above
        "172.15.255.255",
        "172.32.0.0",
        "192.0.1.255",
        "198.17.255.255",
        "223.255.255.255",
        "2606:4700:4700::1111",
        "2a00:1450:4001::1",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",  # NAT64 of 8.8.8.8
        "2001:4860:4860::8888",
        "2001:20::1",  # ORCHIDv2: globally reachable inside 2001::/23
    ],
)
def test_public_unicast_passes(address: str) -> None:
    assert DEFAULT.refusal(address) is None
    assert special_purpose(parse_address(address)) is None


def test_allow_list_opens_exactly_its_networks() -> None:
    policy = TargetPolicy(parse_networks(["127.1.0.0/16", "fd00::/8"]))
    assert policy.refusal("127.1.0.53") is None
    assert policy.refusal("127.1.255.255") is None
    assert policy.refusal("::ffff:127.1.2.3") is None  # mapped form of an allowed address
    assert policy.refusal("::ffff:0:7f01:203") is None  # SIIT form of 127.1.2.3
    assert policy.refusal("::ffff:0:7f00:1") is not None  # SIIT form of 127.0.0.1
    assert policy.refusal("fd00::25") is None
    assert policy.refusal("127.0.0.1") is not None  # loopback, but outside the allowed /16
    assert policy.refusal("127.2.0.1") is not None
    assert policy.refusal("10.0.0.1") is not None
    assert policy.refusal("fc00::1") is not None


@pytest.mark.parametrize("text", ["127.1.0.0/16,::1/128", "127.1.0.0/16, ::1"])
def test_parse_networks_accepts_lists_and_hosts(text: str) -> None:
    nets = parse_networks([text])
    assert [str(n) for n in nets] == ["127.1.0.0/16", "::1/128"]


@pytest.mark.parametrize("text", ["127.1.0.0/33", "not-a-net", "10.0.0.0/8/8", "1.2.3"])
def test_parse_networks_names_the_bad_value(text: str) -> None:
    with pytest.raises(InputError) as info:
        parse_networks([text])
    assert repr(text) in str(info.value)


def test_parse_address_rejects_names() -> None:
    with pytest.raises(InputError):
        parse_address("mx.example.com")
    assert str(parse_address("[2001:db8::1]")) == "2001:db8::1"
