import pytest

from bot.settings import DEFAULTS, Settings
from checks.core.config import Nameserver
from checks.core.errors import InputError


def test_defaults_use_the_system_resolver_and_refuse_non_public_targets() -> None:
    s = Settings.from_env({})
    config = s.engine_config()
    assert config.nameservers == ()
    assert config.policy.refusal("127.1.0.53") is not None
    assert config.timeouts.check == 120 and config.timeouts.dns == 5


def test_environment_is_read_into_one_engine_config() -> None:
    s = Settings.from_env(
        {
            "MAILCHECK_RESOLVER": "127.1.0.53, [::1]:5353,127.1.0.54:5300",
            "MAILCHECK_ALLOW_TARGETS": "127.1.0.0/16,::1/128",
            "MAILCHECK_TIMEOUT": "30",
            "MAILCHECK_DNS_TIMEOUT": "1.5",
        }
    )
    config = s.engine_config()
    assert config.nameservers == (
        Nameserver("127.1.0.53"),
        Nameserver("::1", 5353),
        Nameserver("127.1.0.54", 5300),
    )
    assert config.policy.refusal("127.1.2.3") is None
    assert config.policy.refusal("::1") is None
    assert config.policy.refusal("10.0.0.1") is not None
    assert (config.timeouts.check, config.timeouts.dns) == (30, 1.5)


def test_flags_override_the_environment() -> None:
    s = Settings.from_env({"MAILCHECK_TIMEOUT": "30"}).override(timeout=5.0, ca_file=None)
    assert s.timeout == 5.0


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({"MAILCHECK_RESOLVER": "dns.google"}, "IP address"),
        ({"MAILCHECK_RESOLVER": "127.0.0.1:99999"}, "port"),
        ({"MAILCHECK_ALLOW_TARGETS": "127.1.0.0/99"}, "CIDR"),
        ({"MAILCHECK_TIMEOUT": "soon"}, "MAILCHECK_TIMEOUT"),
        ({"MAILCHECK_DNS_TIMEOUT": "-1"}, "between"),
        ({"MAILCHECK_CA_FILE": "/nonexistent/ca.pem"}, "does not exist"),
    ],
)
def test_bad_settings_are_named(env: dict[str, str], complaint: str) -> None:
    with pytest.raises(InputError, match=complaint):
        Settings.from_env(env)


def test_env_example_documents_every_setting() -> None:
    from pathlib import Path

    example = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    for name in DEFAULTS:
        assert f"\n{name}=" in "\n" + example or f"# {name}=" in example, name


def test_connection_settings_reach_the_engine() -> None:
    config = Settings.from_env(
        {
            "MAILCHECK_CONNECT_TIMEOUT": "3",
            "MAILCHECK_BANNER_TIMEOUT": "45",
            "MAILCHECK_REPLY_TIMEOUT": "7",
            "MAILCHECK_HELO_NAME": "probe.example.org",
        }
    ).engine_config()
    t = config.timeouts
    assert (t.connect, t.banner, t.reply) == (3, 45, 7)
    assert config.helo_name == "probe.example.org"


@pytest.mark.parametrize("name", ["bad name", "localhost", "-x.example"])
def test_a_bad_helo_name_is_named(name: str) -> None:
    with pytest.raises(InputError, match="MAILCHECK_HELO_NAME"):
        Settings.from_env({"MAILCHECK_HELO_NAME": name})


def test_trust_anchors_come_from_a_file_and_bad_lines_are_named(tmp_path) -> None:
    from checks.rules.dnssec import ROOT_ANCHORS

    good = tmp_path / "anchors"
    good.write_text("; the root\n" + "\n".join(ROOT_ANCHORS) + "\n\n")
    config = Settings.from_env({"MAILCHECK_TRUST_ANCHORS": str(good)}).engine_config()
    assert config.trust_anchors == ROOT_ANCHORS
    assert Settings.from_env({}).engine_config().trust_anchors is None  # the root's, built in
    bad = tmp_path / "bad"
    bad.write_text(". IN DS 20326 8 2 not-hex\n")
    with pytest.raises(InputError, match=r"trust anchor file .*bad"):
        Settings.from_env({"MAILCHECK_TRUST_ANCHORS": str(bad)})


def test_each_default_is_stated_once_and_reads_back_as_itself() -> None:
    """DEFAULTS is derived from the fields: every variable set to its listed
    default gives the settings of an empty environment, and the empty
    environment gives the dataclass's own defaults."""
    assert Settings.from_env({}) == Settings()
    for name, default in DEFAULTS.items():
        assert Settings.from_env({name: default}) == Settings(), name
    assert DEFAULTS["MAILCHECK_TIMEOUT"] == "120" and DEFAULTS["MAILCHECK_RESOLVER"] == ""


def test_the_variables_given_are_told_from_the_defaulted() -> None:
    """The CLI keeps history only in a Redis the operator named."""
    assert "MAILCHECK_REDIS_URL" not in Settings.from_env({}).given
    named = Settings.from_env({"MAILCHECK_REDIS_URL": "redis://127.1.0.79:6379/0"})
    assert named.given == {"MAILCHECK_REDIS_URL"}
    assert named.redis_url == "redis://127.1.0.79:6379/0"
