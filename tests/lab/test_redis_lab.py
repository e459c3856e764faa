"""RedisLab against a real redis-server on a loopback address of its own."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from . import redis as redis_lab
from .redis import RedisLab, RedisLabError, running_redis

pytestmark = pytest.mark.lab

ADDRESS = "127.1.0.179"  # not the lab's 127.1.0.79, which may be running
PORT = 6379


def client(lab: RedisLab) -> redis.Redis:
    return redis.Redis.from_url(lab.url, socket_timeout=2)


def refuses_connections() -> bool:
    try:
        socket.create_connection((ADDRESS, PORT), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def can_listen() -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as any server would
        try:
            sock.bind((ADDRESS, PORT))
            sock.listen()
        except OSError:
            return False
    return True


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[RedisLab]:
    server = RedisLab(tmp_path / "redis", address=ADDRESS, port=PORT)
    yield server
    server.stop()


def test_serves_keeps_data_across_restart_then_stops(lab: RedisLab) -> None:
    assert lab.url == f"redis://{ADDRESS}:{PORT}/0"
    lab.start()
    assert lab.is_running() and lab.answers()
    first_pid = int(lab.pid_path.read_text())

    with client(lab) as db:
        db.set("job:1", "queued")
        db.rpush("queue", "a", "b")
        assert db.get("job:1") == b"queued"
        config = db.config_get("*")
    assert config["bind"] == ADDRESS
    assert config["appendonly"] == "yes" and config["save"] == ""
    assert Path(config["dir"]) == lab.state_dir

    lab.restart()
    assert lab.is_running()
    assert int(lab.pid_path.read_text()) != first_pid  # a new process...
    with client(lab) as db:  # ...with the data (from the AOF)
        assert db.get("job:1") == b"queued"
        assert db.lrange("queue", 0, -1) == [b"a", b"b"]

    lab.stop()
    assert not lab.is_running() and not lab.answers()
    assert not lab.pid_path.exists()
    assert refuses_connections() and can_listen()
    lab.stop()  # stopping a stopped lab is fine


def test_start_begins_empty(lab: RedisLab) -> None:
    lab.start()
    with client(lab) as db:
        db.set("old", "1")
    lab.stop()
    lab.start()
    with client(lab) as db:
        assert db.dbsize() == 0


def test_start_stops_a_leftover_instance(lab: RedisLab) -> None:
    lab.start()
    old_pid = int(lab.pid_path.read_text())
    again = RedisLab(lab.state_dir, address=ADDRESS, port=PORT)  # as a later run would
    again.start()
    new_pid = int(lab.pid_path.read_text())
    assert new_pid != old_pid and again.is_running()
    assert not redis_lab._is_redis(old_pid)


def test_another_redis_on_the_address_is_reported(lab: RedisLab, tmp_path: Path) -> None:
    lab.start()
    other = RedisLab(tmp_path / "other", address=ADDRESS, port=PORT)
    with pytest.raises(RedisLabError, match="already answers"):
        other.start()
    assert lab.answers()


def test_port_taken_by_something_else(lab: RedisLab) -> None:
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind((ADDRESS, PORT))
        squatter.listen()
        with pytest.raises(RedisLabError, match="Address already in use"):
            lab.start()
    assert not lab.is_running()


def test_missing_redis_server_says_what_to_run(
    lab: RedisLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    with pytest.raises(RedisLabError, match="run scripts/test"):
        lab.start()


def test_running_redis_starts_one_when_none_answers(tmp_path: Path) -> None:
    with running_redis(tmp_path / "session", address=ADDRESS, port=PORT) as lab:
        assert lab.is_running() and lab.state_dir == (tmp_path / "session").resolve()
        with client(lab) as db:
            assert db.ping()
    assert not lab.is_running() and refuses_connections()


def test_running_redis_reuses_the_one_that_answers(lab: RedisLab, tmp_path: Path) -> None:
    lab.start()
    with running_redis(tmp_path / "unused", address=ADDRESS, port=PORT) as reused:
        assert reused.state_dir == lab.state_dir  # found from the server's own `dir`
        assert reused.is_running()
    assert lab.is_running()  # left running
    assert not (tmp_path / "unused").exists()
