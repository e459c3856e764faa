"""DKIM and ARC verification of a received message (dkimpy), bounded.

The sender chooses how many signatures its message carries and how big the
body is, and every DKIM signature and every ARC set hashes the whole body
again. So the work is planned first, without touching the body: at most
`dkim_signatures` DKIM-Signatures from the top (OpenDKIM's default), an ARC
chain of at most `arc_sets` sets, and no more than `dkim_hash_bytes` of body
hashed in all (EngineConfig.cpu). What does not fit is skipped, and the plan
says why.

The planned work then runs in a child process under a deadline
(checks.core.isolate), never in the event loop nor in a thread: dkimpy's relaxed
body canonicalisation is a regular expression that a body of long runs of
blanks makes quadratic, seconds per megabyte in one C call that keeps the
GIL. Keys are looked up beforehand through our resolver and handed over.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dkim  # type: ignore[import-untyped]

from checks.core import isolate
from checks.core.config import CPULimits
from checks.core.text import untrusted

MB = 1024 * 1024

# A key as looked up: the TXT data, None when there is none, or why the lookup
# failed (a temporary error: the signature cannot be judged).
Key = bytes | str | None


@dataclass(frozen=True)
class Signature:
    domain: str  # d=
    selector: str  # s=
    result: str  # "pass", "fail", "temperror", "skipped"
    reason: str = ""


@dataclass(frozen=True)
class Plan:
    """Which signatures of a message are verified, and why the others are not."""

    dkim: tuple[tuple[str, str], ...]  # (d, s) of the DKIM-Signatures verified, from the top
    skipped: tuple[tuple[str, str], ...]  # (d, s) of those not verified
    arc_sets: int  # ARC sets the message carries
    arc: bool  # whether its ARC chain is verified
    hashed: int  # body bytes the verification hashes at most
    reasons: tuple[str, ...]  # why anything is skipped, one sentence each


@dataclass(frozen=True)
class Verified:
    signatures: tuple[Signature, ...]  # every DKIM-Signature, skipped ones included
    arc: str  # "pass", "fail", "skipped", or "" when the message has no ARC headers
    arc_reason: str
    hashed: int  # body bytes hashed at most
    skipped: tuple[str, ...]  # what was not verified and why, one sentence each


def body_size(message: bytes) -> int:
    """Bytes after the header section (what each signature's body hash reads)."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        end = message.find(separator)
        if end >= 0:
            return len(message) - end - len(separator)
    return 0


def plan(
    message: bytes, signed_by: Sequence[tuple[str, str]], arc_sets: int, limits: CPULimits
) -> Plan:
    """The work for a message with DKIM-Signatures by `signed_by` ((d, s), top
    down) and `arc_sets` ARC sets, within `limits`."""
    body = body_size(message)
    hashed = 0
    chosen: list[tuple[str, str]] = []
    for name in signed_by:
        if len(chosen) == limits.dkim_signatures or hashed + body > limits.dkim_hash_bytes:
            break
        chosen.append(name)
        hashed += body
    skipped = tuple(signed_by[len(chosen) :])
    reasons = []
    if skipped:
        if len(chosen) == limits.dkim_signatures:
            why = f"mailcheck verifies the first {limits.dkim_signatures}, as OpenDKIM does"
        else:
            why = _too_big(body, limits)
        reasons.append(
            f"{len(skipped)} of its {len(signed_by)} DKIM signatures were not verified: {why}"
        )
    arc = arc_sets > 0
    if arc_sets > limits.arc_sets:
        arc = False
        reasons.append(
            f"its {arc_sets} ARC sets were not verified: mailcheck verifies chains of "
            f"{limits.arc_sets} sets at most (each hashes the body again)"
        )
    elif arc and hashed + arc_sets * body > limits.dkim_hash_bytes:
        arc = False
        reasons.append(
            f"its ARC chain ({arc_sets} sets) was not verified: {_too_big(body, limits)}"
        )
    elif arc:
        hashed += arc_sets * body
    return Plan(tuple(chosen), skipped, arc_sets, arc, hashed, tuple(reasons))


def _too_big(body: int, limits: CPULimits) -> str:
    return (
        f"the body is {body / MB:.1f} MB and mailcheck allows "
        f"{limits.dkim_hash_bytes / MB:.0f} MB hashed per message"
    )


async def verify(
    message: bytes, planned: Plan, keys: Mapping[str, Key], limits: CPULimits
) -> Verified:
    """Carry out `planned` in a child process within `limits.dkim_seconds`.
    Never raises for what the message holds: an overrun or a failed child
    leaves the planned signatures "skipped", with the reason."""
    reasons = list(planned.reasons)
    over = reasons[0] if planned.skipped else ""
    late = [Signature(d, s, "skipped", over) for d, s in planned.skipped]
    arc_skipped = "skipped" if planned.arc_sets else ""
    if not planned.dkim and not planned.arc:
        return Verified(tuple(late), arc_skipped, "", 0, tuple(reasons))
    try:
        outcomes, arc_outcome = await isolate.run(
            _verify_in_child,
            message,
            len(planned.dkim),
            planned.arc,
            dict(keys),
            seconds=limits.dkim_seconds,
        )
    except (isolate.Overrun, isolate.ChildFailed) as exc:
        why = f"verifying the message's signatures {exc}: stopped, so they are not judged"
        stopped = [Signature(d, s, "skipped", why) for d, s in planned.dkim]
        return Verified((*stopped, *late), arc_skipped, why, planned.hashed, (why, *reasons))
    found = []
    for (domain, selector), (good, reason) in zip(planned.dkim, outcomes, strict=True):
        key = keys.get(f"{selector}._domainkey.{domain}".lower())
        if good:
            found.append(Signature(domain, selector, "pass"))
        elif isinstance(key, str):
            found.append(Signature(domain, selector, "temperror", key))
        else:
            found.append(Signature(domain, selector, "fail", untrusted(reason, 300)))
    arc, arc_reason = arc_outcome if arc_outcome is not None else (arc_skipped, "")
    return Verified((*found, *late), arc, arc_reason, planned.hashed, tuple(reasons))


# -- in the child process ------------------------------------------------------------


class _Collect:
    """A logger for dkimpy that keeps its error messages: the reasons."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def error(self, message: str, *args: object) -> None:
        self.errors.append(message % args if args else message)

    def debug(self, *args: object, **kwargs: object) -> None:
        pass

    info = warning = debug


def _dnsfunc(keys: Mapping[str, Key]) -> Any:
    def lookup(name: bytes | str, timeout: float = 5) -> bytes | None:
        key = (name.decode() if isinstance(name, bytes) else name).lower().rstrip(".")
        value = keys.get(key)
        if isinstance(value, str):
            raise dkim.DnsTimeoutError(f"{key}: {value}")
        return value

    return lookup


def _verify_in_child(
    message: bytes, count: int, arc: bool, keys: Mapping[str, Key]
) -> tuple[list[tuple[bool, str]], tuple[str, str] | None]:
    """The first `count` DKIM-Signatures ((verified, why not) each), and the
    ARC chain when `arc` ((verdict, reason)). Runs in the child process."""
    outcomes = []
    for idx in range(count):
        log = _Collect()
        try:
            good = bool(dkim.DKIM(message, logger=log).verify(idx=idx, dnsfunc=_dnsfunc(keys)))
        except dkim.DKIMException as exc:
            good, log.errors = False, [*log.errors, str(exc)]
        outcomes.append((good, log.errors[-1] if log.errors else "the signature does not match"))
    if not arc:
        return outcomes, None
    log = _Collect()
    cv, _, reason = dkim.arc_verify(message, logger=log, dnsfunc=_dnsfunc(keys))
    verdict = cv.decode().lower() if isinstance(cv, bytes) else "fail"
    return outcomes, (verdict, untrusted(str(reason), 300))
