"""python -m tests.lab up|down|status: run the lab (DNS and mail) outside pytest.

State lives in $MAILCHECK_LAB_DIR, default .lab/ in the repository: dns/ for
NSD, mail/ for Postfix, Dovecot and the lab PKI (mail/pki/ca.pem is the CA to
trust), redis/ for the bot's Redis.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .mail import LISTENERS, MailLab, MailLabError, default_state_dir, running_lab
from .nsd import NSDLab, NSDLabError
from .redis import RedisLab, RedisLabError

REPO_ROOT = Path(__file__).resolve().parents[2]


def lab_root() -> Path:
    return Path(os.environ.get("MAILCHECK_LAB_DIR") or REPO_ROOT / ".lab")


def lab() -> NSDLab:
    return NSDLab(lab_root() / "dns")


def redis_lab() -> RedisLab:
    """The lab Redis that answers (wherever it was started from), else .lab/redis's."""
    default = RedisLab(lab_root() / "redis")
    try:
        return RedisLab.attach() if default.answers() else default
    except RedisLabError:
        return default


def mail_lab() -> MailLab:
    """The mail lab that runs (wherever it was started from), else .lab/mail's."""
    return running_lab() or MailLab(default_state_dir())


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("up", "down", "status"):
        print("usage: python -m tests.lab up|down|status", file=sys.stderr)
        return 2
    dns_lab, mail, redis = lab(), mail_lab(), redis_lab()
    where = f"{dns_lab.address}:{dns_lab.port}"
    mail_where = f"{len(LISTENERS)} listeners on 127.1.x.x"
    redis_where = redis.url
    if argv[0] == "up":
        mail, redis = MailLab(default_state_dir()), RedisLab(lab_root() / "redis")
        # Imported late: the zone list is the only part that needs the scenarios.
        from .zones import all_zones

        zones = all_zones()
        dns_lab.start(zones)
        print(f"lab dns: nsd on {where} serving {len(zones)} zones (state in {dns_lab.state_dir})")
        mail.start()
        print(f"lab mail: postfix+dovecot, {mail_where}, CA {mail.ca_file}")
        redis.start()
        print(f"lab redis: redis-server on {redis_where} (state in {redis.state_dir})")
    elif argv[0] == "down":
        # Each, even if an earlier one fails; the first error is reported.
        errors: list[Exception] = []
        servers = (
            ("redis", redis, redis_where),
            ("mail", mail, mail_where),
            ("dns", dns_lab, where),
        )
        for name, server, what in servers:
            was_running = server.is_running()
            try:
                server.stop()
            except (NSDLabError, MailLabError, RedisLabError) as exc:
                errors.append(exc)
                continue
            print(f"lab {name}: {'stopped' if was_running else 'was not running'} ({what})")
        if errors:
            raise errors[0]
    else:
        dns_running, mail_running = dns_lab.is_running(), mail.is_running()
        redis_running = redis.is_running()
        print(f"lab dns: {'running' if dns_running else 'stopped'} ({where})")
        state = f"running (state in {mail.state_dir})" if mail_running else "stopped"
        print(f"lab mail: {state} ({mail_where})")
        print(f"lab redis: {'running' if redis_running else 'stopped'} ({redis_where})")
        return 0 if dns_running and mail_running and redis_running else 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (NSDLabError, MailLabError, RedisLabError) as exc:
        print(f"lab: {exc}", file=sys.stderr)
        sys.exit(1)
