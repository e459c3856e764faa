"""Issue 18: each `mailcheck` command imports what it uses, and no more.

Asserted on `sys.modules` of a fresh interpreter, not on the clock (the
figures are bench/startup.py's): `--help` and `codes` load neither the
engine's stacks nor the services', and a check, run to its report against a
stand-in resolver on loopback, loads none of Redis, saq, Slack, the send
test's SMTP receiver or DKIM. A DNS-stage check loads only the DNS stage's
probes, so none of the TLS, HTTP, mail-protocol or signature stacks, and with
`--json` not rich either.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import types

import pytest

from checks import stages as registry
from checks.core.model import CHECK_STAGES, CheckRequest, Stage
from checks.engine.runner import plan
from checks.stages import PROBE_MODULES, available_stages, default_probes
from checks.stages.probe import Probe, ProbeContext
from tests.support.nanodns import NanoDNS, zone

SERVICES = {"redis", "saq", "slack_sdk", "slack_bolt", "aiohttp", "aiosmtpd", "dkim"}
ENGINE = {"rich", "cryptography", "OpenSSL", "dns", "asyncio", "checks.engine.runner"}
# What only the other stages use (certificates, HTTP, SMTP/IMAP/POP3 sessions,
# signed profiles, DNSSEC), and the probe modules of those stages.
NOT_DNS = {
    "cryptography",
    "OpenSSL",
    "asn1crypto",
    "h11",
    "aiosmtplib",
    "aioimaplib",
    "defusedxml",
    "dns.dnssec",
    "checks.rules.dnssec",
    "checks.stages.smtp",
    "checks.stages.mailbox",
    "checks.stages.tls",
    "checks.rules",
    "checks.stages.autoconfig",
    "checks.stages.auth",
    "checks.stages.delivery",
}
# A domain with a mail server, so that every DNS-stage probe has work to do.
ZONE = {
    ("mail.test.", "SOA"): ["ns.mail.test. h.mail.test. 1 3600 900 604800 300"],
    ("mail.test.", "MX"): ["10 mx.mail.test."],
    ("mx.mail.test.", "A"): ["127.1.0.25"],
    ("25.0.1.127.in-addr.arpa.", "PTR"): ["mx.mail.test."],
}

# Runs `mailcheck ARGS...` in-process, then writes what it loaded as stderr's last line.
_RUN = """
import json, sys
from bot import cli
try:
    status = cli.main(sys.argv[1:])
except SystemExit as exc:
    status = exc.code
sys.stderr.write("\\n" + json.dumps({"status": status, "modules": sorted(sys.modules)}))
"""


def mailcheck(*args: str) -> tuple[int, set[str], str]:
    """Exit status, loaded modules (and their top-level packages), and stdout."""
    result = subprocess.run(
        [sys.executable, "-c", _RUN, *args], capture_output=True, text=True, timeout=60
    )
    last = json.loads(result.stderr.rsplit("\n", 1)[-1])
    modules = set(last["modules"])
    return last["status"], modules | {m.split(".")[0] for m in modules}, result.stdout


@pytest.mark.parametrize(
    "args", [("--help",), ("codes",), ("codes", "--markdown"), ("check", "--help")]
)
def test_help_and_codes_load_no_engine_and_no_services(args: tuple[str, ...]) -> None:
    status, loaded, stdout = mailcheck(*args)
    assert status == 0 and stdout
    assert loaded.isdisjoint(SERVICES | ENGINE), sorted(loaded & (SERVICES | ENGINE))


def test_a_check_loads_the_engine_and_no_services() -> None:
    with NanoDNS(zone({})) as resolver:  # NXDOMAIN for every name: a short check
        status, loaded, stdout = mailcheck(
            "check", "example.test", "--json", "--resolver", f"{resolver.address}:{resolver.port}"
        )
        assert resolver.queries
    assert status == 1 and json.loads(stdout)["domain"] == "example.test"
    assert {"checks.engine.runner", "checks.stages.tls", "dns"} <= loaded  # every stage was planned
    assert loaded.isdisjoint(SERVICES), sorted(loaded & SERVICES)


@pytest.mark.parametrize("json_output", [True, False])
def test_a_dns_stage_check_loads_only_the_dns_stage(json_output: bool) -> None:
    with NanoDNS(zone(ZONE)) as resolver:
        status, loaded, stdout = mailcheck(
            "check",
            "mail.test",
            "--stage",
            "dns",
            *(["--json"] if json_output else []),
            "--resolver",
            f"{resolver.address}:{resolver.port}",
            "--allow-target",
            "127.1.0.0/16",
        )
        asked = {(q.question[0].name.to_text(), q.question[0].rdtype) for q in resolver.queries}
    assert status in (0, 1)
    if json_output:
        report = json.loads(stdout)
        assert {t["probe"] for t in report["timings"]} >= {"dns.mx", "dns.ptr", "dns.nameservers"}
    else:
        assert stdout.startswith("mailcheck mail.test")
    assert ("25.0.1.127.in-addr.arpa.", 12) in asked  # the path was walked to the PTR lookup
    assert {"checks.engine.runner", "checks.stages.dns", "checks.stages.consistency"} <= loaded
    assert loaded.isdisjoint(NOT_DNS), sorted(loaded & NOT_DNS)
    assert ("rich" in loaded) is not json_output


def test_stage_choices_are_the_stages_the_engine_runs() -> None:
    """`--stage` takes its choices from the model, so that `--help` needs no probes."""
    assert list(CHECK_STAGES) == available_stages()


def test_the_package_names_still_import() -> None:
    code = (
        "import sys, checks.core.catalog; engine = 'checks.engine.runner' in sys.modules\n"
        "from checks import CheckRequest, EngineConfig, TargetPolicy, run, stream\n"
        "import checks.engine.runner, checks.core.model\n"
        "assert (run, stream) == (checks.engine.runner.run, checks.engine.runner.stream)\n"
        "assert CheckRequest is checks.core.model.CheckRequest\n"
        "print(engine)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"  # the catalog alone does not start the engine


@pytest.mark.parametrize("stage", CHECK_STAGES)
def test_a_stage_is_planned_from_its_modules_as_from_every_probe(stage: Stage) -> None:
    request = CheckRequest("example.test", "example.test", stages=frozenset({stage}))
    assert plan(default_probes({stage}), request) == plan(default_probes(), request)


def test_the_probe_modules_hold_the_stages_they_are_listed_with() -> None:
    for module, held in PROBE_MODULES:
        assert {p.stage for p in importlib.import_module(module).PROBES} == held, module
    # What lets a needed probe name the stage, hence the modules, to import next.
    assert all(p.name.startswith(f"{p.stage.value}.") for p in default_probes())


async def _nothing(ctx: ProbeContext) -> None:
    return None


@pytest.mark.parametrize(
    ("need", "imported"),
    [
        ("connect.b", ["dns.a", "connect.b"]),  # its stage's module only
        ("odd", ["dns.a", "odd", "tls.c"]),  # not named after a stage: every module
    ],
)
def test_a_needed_probe_is_imported_with_its_stage(
    monkeypatch: pytest.MonkeyPatch, need: str, imported: list[str]
) -> None:
    held = {
        "fake_dns": (Probe("dns.a", Stage.DNS, _nothing, needs=(need,)),),
        "fake_connect": (Probe(need, Stage.CONNECT, _nothing),),
        "fake_tls": (Probe("tls.c", Stage.TLS, _nothing),),
    }
    for name, probes in held.items():
        module = types.ModuleType(name)
        module.PROBES = probes  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, name, module)
    stages = [("fake_dns", Stage.DNS), ("fake_connect", Stage.CONNECT), ("fake_tls", Stage.TLS)]
    monkeypatch.setattr(registry, "PROBE_MODULES", [(m, frozenset({s})) for m, s in stages])
    assert [p.name for p in default_probes({Stage.DNS})] == imported
