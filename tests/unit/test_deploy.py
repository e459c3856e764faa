"""deploy/ stays in step with the code: the manifest declares what the app
listens for, compose runs what the README promises."""

from pathlib import Path
from urllib.parse import urlsplit

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


def test_redis_demands_a_password_and_every_client_carries_it() -> None:
    """Whoever reaches an open Redis can queue checks, post as the bot and read
    every report: compose starts Redis only with a password, and hands it on."""
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    command = services["redis"]["command"]
    assert "--requirepass" in command
    password = command[command.index("--requirepass") + 1]
    # ${VAR:?message}: compose refuses to start while REDIS_PASSWORD is unset or empty.
    assert password.startswith("${REDIS_PASSWORD:?"), password
    for name in ("bot", "worker", "receiver"):
        url = urlsplit(services[name]["environment"]["MAILCHECK_REDIS_URL"])
        assert (url.scheme, url.hostname, url.port, url.path) == ("redis", "redis", 6379, "/0")
        assert url.password == "${REDIS_PASSWORD}", name
    directives = {
        line.split("#")[0].strip() for line in (DEPLOY / "redis.conf").read_text().splitlines()
    }
    assert "protected-mode no" not in directives
    example = (ROOT / ".env.example").read_text()
    assert "\nREDIS_PASSWORD=\n" in example  # documented, and empty: no shared default
    # Without compose, the operator sets the password: the unit and the README say how.
    unit = (DEPLOY / "systemd" / "mailcheck-bot.service").read_text()
    assert "MAILCHECK_REDIS_URL=redis://:PASSWORD@127.0.0.1:6379/0" in unit
    assert "requirepass" in unit
    readme = (ROOT / "README.md").read_text()
    assert "REDIS_PASSWORD" in readme and "MAILCHECK_REDIS_URL=redis://:PASSWORD@" in readme


def test_a_redis_password_is_never_shown() -> None:
    """The URL carries the password: Settings, the Redis client and the queue
    (which saq and our logs print) show it redacted."""
    from bot.queue import make_queue, redis_client
    from bot.settings import Settings

    secret = "d0n0tl0gme"
    settings = Settings.from_env({"MAILCHECK_REDIS_URL": f"redis://:{secret}@127.0.0.1:6379/0"})
    assert settings.redis_url.endswith("@127.0.0.1:6379/0")
    client = redis_client(settings.redis_url)
    queue = make_queue(settings)
    for shown in (repr(settings), str(settings), repr(client), repr(queue), str(queue)):
        assert secret not in shown


async def test_the_deployed_redis_refuses_clients_without_the_password(tmp_path: Path) -> None:
    """deploy/redis.conf run as compose runs it (plus --requirepass), on loopback:
    a client without the password is refused, the URL compose builds gets in."""
    import asyncio
    import socket
    import subprocess

    from redis.exceptions import AuthenticationError, ResponseError
    from redis.exceptions import ConnectionError as RedisConnectionError

    from bot.queue import redis_client
    from tests.lab.redis import find_redis_server

    address, password = "127.1.30.79", "4f1c0ffee0ddba11"
    with socket.socket() as probe:
        probe.bind((address, 0))
        port = probe.getsockname()[1]
    command = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]["redis"][
        "command"
    ]
    assert command[:2] == ["redis-server", "/usr/local/etc/redis/redis.conf"]
    # The file as it is, but for the data directory (compose mounts a volume at
    # /data), which Redis enters as it reads the line, before any option.
    conf = (DEPLOY / "redis.conf").read_text()
    assert "\ndir /data\n" in conf
    (tmp_path / "redis.conf").write_text(conf.replace("\ndir /data\n", f"\ndir {tmp_path}\n"))
    server = await asyncio.create_subprocess_exec(
        find_redis_server(),
        *(str(tmp_path / "redis.conf"), "--requirepass", password, "--bind", address),
        *("--port", str(port), "--daemonize", "no"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    anonymous = redis_client(f"redis://{address}:{port}/0")
    deployed = redis_client(f"redis://:{password}@{address}:{port}/0")
    try:
        for _ in range(100):  # until it listens
            try:
                await anonymous.ping()
            except AuthenticationError:  # redis-py's HELLO, refused unauthenticated
                break
            except ResponseError as exc:
                assert "NOAUTH" in str(exc), exc
                break
            except RedisConnectionError:
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("Redis answered a client that gave no password")
        else:
            raise AssertionError("redis-server did not start")
        assert await deployed.ping() is True
        assert await deployed.set("mailcheck:deploy-test", "1")
    finally:
        await anonymous.aclose()
        await deployed.aclose()
        server.terminate()
        await asyncio.wait_for(server.wait(), 10)
