"""A real nginx for the lab: MTA-STS policies, autoconfig and autodiscover files.

NginxLab(state_dir).start(sites, pki) writes an nginx.conf serving each Site on
its own 127.1.x.y address, HTTPS on 443 with a certificate from the lab PKI
and plain HTTP on 80, from state_dir/www/<host>/<path>: one directory per
Host header, so a single address serves many scenario hosts. A POST gets the
file too (autodiscover is POSTed), and a Site may redirect chosen host+path
pairs (302, Location as given). nginx runs as
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
_TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
STOP_TIMEOUT = 5.0


class WebLabError(RuntimeError):
    """nginx could not be found, configured, started or stopped."""


@dataclass(frozen=True)
class Site:
    """What one lab address serves: host -> path -> body."""

    address: str
    cert: CertSpec  # served on 443; must be in the PKI build
    files: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    redirects: Mapping[str, str] = field(default_factory=dict)  # "host/path" -> Location
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
        lines = [
            "user root;",
            "worker_processes 1;",
            f"pid {self.pid_path};",
            f"error_log {self.log_path} info;",
            "events { worker_connections 128; }",
            "http {",
            f"    access_log {self.state_dir / 'access.log'};",
            *(f"    {kind}_temp_path {tmp}/{kind};" for kind in _TEMP_PATHS),
            "    types { text/plain txt; application/xml xml; application/json json;",
            "            application/x-apple-aspen-config mobileconfig; }",
            "    default_type application/octet-stream;",
            "    server_tokens off;",
            # nginx 1.22's default leaves TLS 1.3 out; today's web servers offer it.
            "    ssl_protocols TLSv1.2 TLSv1.3;",
            "    map_hash_bucket_size 256;",  # keys are whole host+path strings
            '    map "$host$uri" $lab_redirect {',
            '        default "";',
        ]
        redirects = {k: v for site in sites for k, v in site.redirects.items()}
        lines += [f'        "{k}" "{v}";' for k, v in sorted(redirects.items())]
        lines.append("    }")
        for site in sites:
            lines.append("    server {")
            if site.https:
                lines += [
                    f"        listen {site.address}:443 ssl;",
                    f"        ssl_certificate {pki.cert_path(site.cert.name)};",
                    f"        ssl_certificate_key {pki.key_path(site.cert.name)};",
                ]
            if site.http:
                lines.append(f"        listen {site.address}:80;")
            lines += [
                "        server_name _;",
                f"        root {self.www}/$host;",
                "        error_page 405 =200 $uri;",  # a POST to a static file gets the file
                "        if ($lab_redirect) { return 302 $lab_redirect; }",
                "        location / { try_files $uri =404; }",
                "    }",
            ]
        lines.append("}")
        return "\n".join(lines) + "\n"
