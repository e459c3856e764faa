"""deploy/ stays in step with the code: the manifest declares what the app
listens for, compose runs what the README promises."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def test_manifest_declares_what_the_app_handles() -> None:
    manifest = yaml.safe_load((DEPLOY / "slack-app-manifest.yml").read_text())
    (command,) = manifest["features"]["slash_commands"]
    assert command["command"] == "/mailcheck"
    app_source = (ROOT / "bot" / "listeners" / "commands.py").read_text()
    assert '@app.command("/mailcheck")' in app_source
    assert '@app.action("mailcheck_rerun")' in app_source
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"commands", "chat:write", "files:write"} <= scopes
    # users.conversations, so the App Home shows only the channels a user is in
    assert {"channels:read", "groups:read", "im:read", "mpim:read"} <= scopes
    settings = manifest["settings"]
    assert settings["interactivity"]["is_enabled"] is True  # the Re-run button
    assert "app_home_opened" in settings["event_subscriptions"]["bot_events"]
    assert settings["socket_mode_enabled"] is True  # matches MAILCHECK_SLACK_MODE's default


def test_compose_runs_persistent_redis_a_bot_and_two_workers() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["bot"]["command"] == ["bot"]
    assert services["worker"]["command"] == ["worker"]
    assert services["worker"]["deploy"]["replicas"] == 2
    assert "redis-data:/data" in services["redis"]["volumes"]
    directives = {
        line.split("#")[0].strip() for line in (DEPLOY / "redis.conf").read_text().splitlines()
    }
    assert {"appendonly yes", "maxmemory-policy noeviction"} <= directives


def test_systemd_units_run_the_console_script() -> None:
    bot = (DEPLOY / "systemd" / "mailcheck-bot.service").read_text()
    worker = (DEPLOY / "systemd" / "mailcheck-worker@.service").read_text()
    assert "ExecStart=/opt/mailcheck/bin/mailcheck bot" in bot
    assert "ExecStart=/opt/mailcheck/bin/mailcheck worker" in worker
    assert "EnvironmentFile=/etc/mailcheck/env" in bot and "KillSignal=SIGTERM" in worker


def test_the_receiver_runs_unprivileged_on_port_25() -> None:
    unit = (DEPLOY / "systemd" / "mailcheck-receiver.service").read_text()
    assert "ExecStart=/opt/mailcheck/bin/mailcheck receiver" in unit
    assert "User=mailcheck" in unit and "CAP_NET_BIND_SERVICE" in unit
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    receiver = compose["services"]["receiver"]
    assert receiver["command"] == ["receiver"]
    assert receiver["profiles"] == ["sendtest"]  # only for operators who set it up
    listen = receiver["environment"]["MAILCHECK_RECEIVER_LISTEN"]
    assert receiver["ports"] == [f"25:{listen.rsplit(':', 1)[1]}"]
