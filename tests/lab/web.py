"""A real nginx for the lab: MTA-STS policies (and, later, autoconfig files).

NginxLab(state_dir).start(sites, pki) writes an nginx.conf serving each Site on
its own 127.1.x.y address, HTTPS on 443 with a certificate from the lab PKI
and plain HTTP on 80, from state_dir/www/<host>/<path>: one directory per
Host header, so a single address serves many scenario hosts. nginx runs as
root (user root): the lab's files may sit below directories other users
cannot search, and nothing here faces a real network.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import proc
from .pki import CertSpec, LabPKI

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


class WebLabError(RuntimeError):
    """nginx could not be found, configured, started or stopped."""


@dataclass(frozen=True)
class Site:
    """What one lab address serves: host -> path -> body."""

    address: str
    cert: CertSpec  # served on 443; must be in the PKI build
    files: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    https: bool = True
    http: bool = True

    def ports(self) -> tuple[int, ...]:
        return (443,) * self.https + (80,) * self.http


def find_nginx() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise WebLabError("nginx not found; run scripts/test, which installs nginx-light")
    return found


class NginxLab:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.conf_path = self.state_dir / "nginx.conf"
        self.pid_path = self.state_dir / "nginx.pid"
        self.log_path = self.state_dir / "error.log"
        self.www = self.state_dir / "www"

    def start(self, sites: Iterable[Site], pki: LabPKI) -> None:
        sites = list(sites)
        nginx = find_nginx()
        self.stop()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "tmp").mkdir(exist_ok=True)
        shutil.rmtree(self.www, ignore_errors=True)
        for site in sites:
            for host, files in site.files.items():
                for path, body in files.items():
                    target = self.www / host / path.lstrip("/")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(body)
        self.conf_path.write_text(self._config(sites, pki))
        self.log_path.write_text("")
        argv = [nginx, "-p", str(self.state_dir), "-c", str(self.conf_path)]
        checked = subprocess.run([*argv, "-t"], capture_output=True, text=True, check=False)
        if checked.returncode != 0:
            raise WebLabError(f"nginx.conf is invalid:\n{checked.stderr.strip()}")
        started = subprocess.run(argv, capture_output=True, text=True, check=False)
        if started.returncode != 0:
            raise WebLabError(f"nginx did not start:\n{started.stderr.strip()}")
        deadline = time.monotonic() + START_TIMEOUT
        endpoints = [(s.address, port) for s in sites for port in s.ports()]
        while time.monotonic() < deadline:
            if self.is_running() and all(proc.accepts(*ep) for ep in endpoints):
                return
            time.sleep(proc.POLL_INTERVAL)
        self.stop()
        raise WebLabError(f"nginx did not listen on {endpoints}\n{proc.log_tail(self.log_path)}")

    def stop(self) -> None:
        proc.stop(self._pid(), "nginx", STOP_TIMEOUT, error=WebLabError)
        self.pid_path.unlink(missing_ok=True)

    def is_running(self) -> bool:
        return self._pid() is not None

    def _pid(self) -> int | None:
        return proc.read_pid(self.pid_path, "nginx")

    def _config(self, sites: list[Site], pki: LabPKI) -> str:
        tmp = self.state_dir / "tmp"
        servers = []
        for site in sites:
            listen = []
            if site.https:
                cert = pki.cert_path(site.cert.name)
                key = pki.key_path(site.cert.name)
                listen += [
                    f"listen {site.address}:443 ssl;",
                    f"ssl_certificate {cert};",
                    f"ssl_certificate_key {key};",
                ]
            if site.http:
                listen.append(f"listen {site.address}:80;")
            servers.append(
                "server {\n" + "".join(f"    {line}\n" for line in listen) + "    server_name _;\n"
                f"    root {self.www}/$host;\n"
                "    location / { try_files $uri =404; }\n"
                "}\n"
            )
        return (
            "user root;\n"
            "worker_processes 1;\n"
            f"pid {self.pid_path};\n"
            f"error_log {self.log_path} info;\n"
            "events { worker_connections 128; }\n"
            "http {\n"
            f"    access_log {self.state_dir / 'access.log'};\n"
            f"    client_body_temp_path {tmp}/body;\n"
            f"    proxy_temp_path {tmp}/proxy;\n"
            f"    fastcgi_temp_path {tmp}/fastcgi;\n"
            f"    uwsgi_temp_path {tmp}/uwsgi;\n"
            f"    scgi_temp_path {tmp}/scgi;\n"
            "    types { text/plain txt; application/xml xml; application/json json; }\n"
            "    default_type application/octet-stream;\n"
            "    server_tokens off;\n"
            + "".join("    " + line + "\n" for s in servers for line in s.splitlines())
            + "}\n"
        )
