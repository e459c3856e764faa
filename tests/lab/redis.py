"""Run a real redis-server on a loopback address for the test lab.

    lab = RedisLab(state_dir)          # 127.1.0.79:6379 unless told otherwise
    lab.start()                        # empty; waits until PING answers
    lab.url                            # redis://127.1.0.79:6379/0
    lab.restart()                      # stop, start again: the data is kept (AOF)
    lab.stop()

Everything lives in state_dir: redis.conf (generated), redis.pid, redis.log
and the append-only files (appendonlydir/). The server binds that one
address, daemonises, and writes every change to the AOF, so a restart keeps
what was queued: tests check that jobs and watches survive one. No RDB
snapshots (`save ""`). Nothing touches the system's Redis or /etc/redis.

`running_redis(tmp_dir)` is for a test session: the lab's Redis when one
answers (left running), else one started in tmp_dir (stopped afterwards).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import proc

DEFAULT_ADDRESS = "127.1.0.79"
DEFAULT_PORT = 6379

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


class RedisLabError(RuntimeError):
    """redis-server could not be found, configured, started or stopped."""


def find_redis_server() -> str:
    """Path of redis-server; /usr/sbin and /usr/bin may be off a non-root PATH."""
    found = shutil.which("redis-server") or shutil.which(
        "redis-server", path="/usr/bin:/usr/sbin:/usr/local/bin:/usr/local/sbin"
    )
    if found is None:
        raise RedisLabError(
            "redis-server not found on PATH or in /usr/bin; run scripts/test, "
            "which installs redis-server"
        )
    return found


def default_state_dir() -> Path:
    """Where `python -m tests.lab up` keeps Redis: $MAILCHECK_LAB_DIR/redis,
    else .lab/redis in the repository."""
    root = os.environ.get("MAILCHECK_LAB_DIR")
    base = Path(root) if root else Path(__file__).resolve().parents[2] / ".lab"
    return base / "redis"


class RedisLab:
    """One redis-server whose config, pidfile, log and data live in state_dir."""

    def __init__(
        self, state_dir: Path, address: str = DEFAULT_ADDRESS, port: int = DEFAULT_PORT
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.address = address
        self.port = port
        self.conf_path = self.state_dir / "redis.conf"
        self.pid_path = self.state_dir / "redis.pid"
        self.log_path = self.state_dir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://{self.address}:{self.port}/0"

    @classmethod
    def attach(cls, address: str = DEFAULT_ADDRESS, port: int = DEFAULT_PORT) -> RedisLab:
        """The RedisLab of the server answering at address:port, wherever it
        was started from (its state_dir is its working directory, `dir`)."""
        try:
            with _client(address, port) as client:
                state_dir = client.config_get("dir")["dir"]
        except (redis.RedisError, KeyError) as exc:
            raise RedisLabError(f"no lab Redis answers on {address}:{port}: {exc}") from exc
        return cls(Path(state_dir), address, port)

    # --- lifecycle -------------------------------------------------------------

    def start(self, keep_data: bool = False) -> None:
        """Start redis-server and wait until it answers PING. The data of an
        earlier run in state_dir is removed first, unless keep_data."""
        server = find_redis_server()
        self.stop()  # a leftover instance from an earlier run would hold the port
        if self.answers():
            raise RedisLabError(
                f"another Redis already answers on {self.address}:{self.port}; stop it first "
                "(python -m tests.lab down, if it is the lab's)"
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if not keep_data:
            shutil.rmtree(self.state_dir / "appendonlydir", ignore_errors=True)
            (self.state_dir / "dump.rdb").unlink(missing_ok=True)
        self._write_config()
        with self.log_path.open("a") as log:
            # Config errors come before daemonising, on stderr: keep them with the log.
            result = subprocess.run(
                [server, str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
                start_new_session=True,
            )
        if result.returncode != 0:
            raise RedisLabError(
                f"redis-server exited with {result.returncode}\n{proc.log_tail(self.log_path)}"
            )
        self._wait_until_serving()

    def stop(self) -> None:
        """Stop our redis-server (SIGTERM: it flushes the AOF), if it runs."""
        pids = set(_redis_pids_in(self.state_dir))
        pid = self._pid()
        if pid is not None:
            pids.add(pid)
        for pid in pids:
            proc.stop(pid, "redis-server", STOP_TIMEOUT, error=RedisLabError)
        # Redis removes it on a clean exit; not after SIGKILL.
        self.pid_path.unlink(missing_ok=True)

    def restart(self) -> None:
        """Stop and start again, keeping the data."""
        self.stop()
        self.start(keep_data=True)

    def is_running(self) -> bool:
        return self._pid() is not None

    def answers(self) -> bool:
        """True if something answers PING on our address and port."""
        try:
            with _client(self.address, self.port) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    # --- internals -------------------------------------------------------------

    def _pid(self) -> int | None:
        """PID from the pidfile, if that process is still a live redis-server."""
        return proc.read_pid(self.pid_path, "redis-server")

    def _write_config(self) -> None:
        # Every path is pinned into state_dir; nothing from /etc/redis is read.
        settings = [
            ("bind", self.address),
            ("port", str(self.port)),
            ("protected-mode", "no"),
            ("daemonize", "yes"),
            ("supervised", "no"),
            ("pidfile", _quote(self.pid_path)),
            ("logfile", _quote(self.log_path)),
            ("loglevel", "notice"),
            ("dir", _quote(self.state_dir)),
            ("appendonly", "yes"),
            ("appendfsync", "everysec"),
            ("save", '""'),
            ("databases", "16"),
            ("always-show-logo", "no"),
        ]
        lines = ["# Generated by tests/lab/redis.py; rewritten at every start."]
        lines += [f"{key} {value}" for key, value in settings]
        self.conf_path.write_text("\n".join(lines) + "\n")

    def _wait_until_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.answers():
                return
            # The daemon forked before redis-server returned; if it is gone
            # already (port in use, bad AOF...), waiting longer is no use.
            if not _redis_pids_in(self.state_dir) and not self.is_running():
                raise RedisLabError(
                    f"redis-server for {self.address}:{self.port} exited while starting\n"
                    f"{proc.log_tail(self.log_path)}"
                )
            time.sleep(0.05)
        raise RedisLabError(
            f"redis-server did not answer PING on {self.address}:{self.port} "
            f"within {START_TIMEOUT:.0f}s\n{proc.log_tail(self.log_path)}"
        )


@contextlib.contextmanager
def running_redis(
    tmp_dir: Path, address: str = DEFAULT_ADDRESS, port: int = DEFAULT_PORT
) -> Iterator[RedisLab]:
    """Redis for a test session: the one answering at address:port (the lab's,
    from `python -m tests.lab up`; left running), else one started in tmp_dir
    (stopped afterwards)."""
    probe = RedisLab(tmp_dir, address, port)
    if probe.answers():
        yield RedisLab.attach(address, port)
        return
    probe.start()
    try:
        yield probe
    finally:
        probe.stop()


def _client(address: str, port: int) -> redis.Redis:
    # No retries: redis-py's default backs off for seconds before admitting
    # that nothing listens.
    return redis.Redis(
        host=address,
        port=port,
        socket_timeout=1.0,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
    )


def _quote(path: Path) -> str:
    text = str(path)
    if any(ch in text for ch in '"\\\n'):
        raise RedisLabError(f"{text!r}: a state directory name cannot hold quotes or newlines")
    return f'"{text}"'


def _is_redis(pid: int) -> bool:
    """True if pid is a live (non-zombie) redis-server (tests check old servers with it)."""
    return proc.is_live(pid, "redis-server")


def _redis_pids_in(state_dir: Path) -> list[int]:
    """Live redis-servers working in state_dir (redis chdirs to its `dir`)."""
    return proc.pids_with_cwd(state_dir, "redis-server")
